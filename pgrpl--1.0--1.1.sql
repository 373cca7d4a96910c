/* pgrpl--1.0--1.1.sql: from pgrpl 1.0 to 1.1 (a new install runs 1.0, then this) */

\echo Use "ALTER EXTENSION pgrpl UPDATE TO '1.1'" to load this file. \quit

-- 1.1 changes what pgrpl.key_hash() returns for a key of one integer column
-- (the relation's tag and the integer, in order, so that the key index grows
-- where the table's own primary key does, instead of a random hash; other
-- keys keep the hash).  The library of 1.1 already computes the new values, for
-- new rows and in the function, so the rows captured under 1.0 and the
-- expression index over old keys are brought in line here; until then
-- row_history() and table_as_of() may miss rows captured before.  This
-- rewrites the captured rows whose key is one integer column, once (the
-- others keep their hash and are left alone).
UPDATE pgrpl.change
   SET key_hash = pgrpl.key_hash(schema_name, table_name, row_key)
 WHERE row_key IS NOT NULL
   AND key_hash IS DISTINCT FROM pgrpl.key_hash(schema_name, table_name, row_key);
REINDEX INDEX pgrpl.change_old_key_idx;

COMMENT ON FUNCTION pgrpl.key_hash(text, text, jsonb) IS
    'row lookup key of a replica identity key: for one integer column the relation''s tag and the integer, else a hash; not unique';

-- New values of the log's large columns are lz4-compressed where the server
-- has lz4 (existing values stay as they are): pglz spent a third of the
-- worker's time on rows with an incompressible TOASTed column (workload (c)
-- of scripts/bench.sh); lz4 is many times faster and gives up quickly on
-- data that does not compress.
DO $$
BEGIN
    ALTER TABLE pgrpl.change
        ALTER COLUMN old SET COMPRESSION lz4,
        ALTER COLUMN new SET COMPRESSION lz4,
        ALTER COLUMN unchanged SET COMPRESSION lz4,
        ALTER COLUMN message_content SET COMPRESSION lz4,
        ALTER COLUMN row_key SET COMPRESSION lz4,
        ALTER COLUMN old_key SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;   -- built without lz4: the server's default_toast_compression
END
$$;
