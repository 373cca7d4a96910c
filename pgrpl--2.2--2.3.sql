/* pgrpl--2.2--2.3.sql: the worker compresses the log's large values itself */

\echo Use "ALTER EXTENSION pgrpl UPDATE TO '2.3'" to load this file. \quit

-- A change's large values (old, new, a message's content) are compressed
-- by the worker, which skips those that do not compress (a sample from
-- their middle is tried first); TOAST then only moves them out of line.
-- Recurses to every subscription's partitions; new ones copy it (LIKE ...
-- INCLUDING STORAGE).  The compression method stays the column's (lz4
-- where the server has it).  Rows written before keep their form.
ALTER TABLE pgrpl.change
    ALTER COLUMN old SET STORAGE EXTERNAL,
    ALTER COLUMN new SET STORAGE EXTERNAL,
    ALTER COLUMN message_content SET STORAGE EXTERNAL;
