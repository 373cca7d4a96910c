--
-- capture: the capture module on its own.  pgrpl.capture_preview() runs
-- real pgoutput messages (from a slot of this server) through the worker's
-- decoder and capture module and returns the rows a subscription would
-- record, without a worker or a change log: old/new/row_key/old_key, the
-- TRUNCATE fan-out, relation versions, the non-transactional message rule,
-- seq and transaction numbering, unchanged TOASTed columns.
--
\set VERBOSITY terse

CREATE TABLE cap_t (id int PRIMARY KEY, v text, big text);
ALTER TABLE cap_t ALTER big SET STORAGE EXTERNAL;
CREATE TABLE cap_full (id int, v text);
ALTER TABLE cap_full REPLICA IDENTITY FULL;
CREATE TABLE cap_other (x int);
CREATE PUBLICATION cap_pub FOR TABLE cap_t, cap_full, cap_other;
SELECT 'init' FROM pg_create_logical_replication_slot('cap_slot', 'pgoutput');

INSERT INTO cap_t VALUES (1, 'one', repeat('x', 5000)), (2, 'two', NULL);
UPDATE cap_t SET v = 'uno' WHERE id = 1;            -- big unchanged (TOAST)
UPDATE cap_t SET id = 3 WHERE id = 2;               -- a key change
BEGIN;
INSERT INTO cap_full VALUES (1, 'a');
UPDATE cap_full SET v = 'b';                         -- old is the whole row
SELECT 'm' FROM pg_logical_emit_message(true, 'cap_tx', 'in a transaction');
COMMIT;
SELECT 'm' FROM pg_logical_emit_message(false, 'cap_nontx', 'on its own');
DELETE FROM cap_t WHERE id = 3;
ALTER TABLE cap_t ADD COLUMN extra int;             -- a new version of cap_t
INSERT INTO cap_t VALUES (4, 'four', NULL, 44);
TRUNCATE cap_t, cap_full;
BEGIN;                                               -- nothing published
CREATE TEMP TABLE cap_scratch (i int);
COMMIT;

CREATE TEMP TABLE cap_msgs AS
SELECT m.lsn, m.data, m.ord
  FROM pg_logical_slot_peek_binary_changes('cap_slot', NULL, NULL,
         'proto_version', '1', 'publication_names', 'cap_pub', 'messages', 'true')
       WITH ORDINALITY AS m(lsn, xid, data, ord);
CREATE TEMP TABLE cap_rows AS
SELECT r.ord, r.row
  FROM pgrpl.capture_preview((SELECT array_agg(data ORDER BY ord) FROM cap_msgs),
                             (SELECT array_agg(lsn ORDER BY ord) FROM cap_msgs))
       WITH ORDINALITY AS r(row, ord);

-- Relation versions, in the order they were first needed: the column added
-- to cap_t is a new version; the RELATION messages pgoutput sends again
-- (e.g. before the TRUNCATE) describe a known version and add none.
SELECT row->>'rel_id' AS rel_id, row->>'table_name' AS table_name,
       row->>'replica_identity' AS ri, row->'columns' AS columns
  FROM cap_rows WHERE row->>'kind' = 'relation' ORDER BY ord;

-- Every change row (LSNs vary between runs: not shown).
SELECT row->>'txn_id' AS txn, row->>'seq' AS seq, row->>'op' AS op,
       row->>'rel_id' AS rel, row->'old' AS old, CASE WHEN jsonb_typeof(row->'new') = 'object' THEN (row->'new') - 'big' END AS new,
       row->'unchanged' AS unchanged, row->'row_key' AS row_key, row->'old_key' AS old_key,
       row->>'message_prefix' AS prefix
  FROM cap_rows WHERE row->>'kind' = 'change' ORDER BY ord;

-- One transaction row per unit with rows, after them; the empty
-- transaction has none.  The non-transactional message is a unit of its
-- own (state m, no xid) placed one byte before the end of its record.
SELECT row->>'txn_id' AS txn, row->>'state' AS state, row->>'changes' AS changes,
       row ? 'xid' AS has_xid,
       CASE WHEN row->>'state' = 'm'
            THEN (row->>'end_lsn')::pg_lsn - (row->>'commit_lsn')::pg_lsn END AS end_minus_commit_if_message
  FROM cap_rows WHERE row->>'kind' = 'transaction' ORDER BY ord;
SELECT (c.row->>'lsn')::pg_lsn = (t.row->>'commit_lsn')::pg_lsn AS message_row_at_commit_lsn
  FROM cap_rows c JOIN cap_rows t ON t.row->>'txn_id' = c.row->>'txn_id'
 WHERE c.row->>'kind' = 'change' AND c.row->>'message_prefix' = 'cap_nontx'
   AND t.row->>'kind' = 'transaction';
-- The unchanged TOASTed value is left out of new, and the new value of
-- the insert is complete.
SELECT length(row->'new'->>'big') AS big_length FROM cap_rows
 WHERE row->>'kind' = 'change' AND row->>'op' = 'I' AND row->>'rel_id' = '1'
   AND row->'new'->>'id' = '1';

-- Malformed streams are protocol errors, as in the worker.
SELECT pgrpl.capture_preview(ARRAY[(SELECT data FROM cap_msgs
                                     WHERE get_byte(data, 0) = ascii('C') LIMIT 1)]);
SELECT pgrpl.capture_preview(ARRAY[(SELECT data FROM cap_msgs
                                     WHERE get_byte(data, 0) = ascii('B') LIMIT 1),
                                   (SELECT data FROM cap_msgs
                                     WHERE get_byte(data, 0) = ascii('B') LIMIT 1)]);
SELECT pgrpl.capture_preview(ARRAY['\x49'::bytea]);
SELECT pgrpl.capture_preview(NULL);
SELECT pgrpl.capture_preview(ARRAY['\x42'::bytea], ARRAY[]::pg_lsn[]);

SELECT pg_drop_replication_slot('cap_slot');
DROP PUBLICATION cap_pub;
DROP TABLE cap_t, cap_full, cap_other;
