--
-- streaming: large transactions streamed while they run (protocol 2+).
--
-- test/regress.conf sets logical_decoding_work_mem to 64kB, so the
-- walsender streams any transaction of more than a few hundred rows.
--
\set VERBOSITY terse

CREATE TABLE st_t (id int PRIMARY KEY, v text);
CREATE PUBLICATION st_pub FOR TABLE st_t;
SELECT public.create_sub('st', ARRAY['st_pub']);
SELECT streaming FROM pgrpl.subscriptions WHERE name = 'st';
SELECT public.wait_sub('st');
-- This server streams: protocol 2 or later was negotiated.
SELECT proto_version >= 2 AS streams, streamed_transactions
  FROM pgrpl.stat_subscription WHERE name = 'st';

-- A transaction far larger than logical_decoding_work_mem.
INSERT INTO st_t SELECT g, repeat('v', 100) FROM generate_series(1, 3000) g;
SELECT public.wait_sub('st');
SELECT count(*) AS changes, count(DISTINCT commit_lsn) AS transactions,
       min(seq) AS first_seq, max(seq) AS last_seq
  FROM pgrpl.changes('st');
-- (streams_in_progress is not shown: on this loopback primary the worker's
-- own large local transactions are streamed back to it, empty.)
SELECT streamed_transactions >= 1 AS was_streamed, streamed_bytes > 300000 AS bytes_counted
  FROM pgrpl.stat_subscription WHERE name = 'st';
SELECT changes FROM pgrpl.transactions('st');

-- Subtransactions: a rolled-back savepoint's rows go (with those of the
-- savepoint inside it), a released one's stay; seq stays dense.
BEGIN;
UPDATE st_t SET v = 'kept ' || id WHERE id <= 1000;
SAVEPOINT a;
DELETE FROM st_t WHERE id > 1000;
SAVEPOINT a_inner;
INSERT INTO st_t SELECT g, 'gone' FROM generate_series(5001, 6000) g;
RELEASE SAVEPOINT a_inner;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
INSERT INTO st_t SELECT g, 'released' FROM generate_series(7001, 7500) g;
RELEASE SAVEPOINT b;
INSERT INTO st_t VALUES (8000, 'last');
COMMIT;
SELECT public.wait_sub('st');
WITH last AS (SELECT max(commit_lsn) AS l FROM pgrpl.transactions('st'))
SELECT op, count(*), min(seq), max(seq), count(*) FILTER (WHERE new->>'v' = 'gone') AS gone
  FROM pgrpl.changes('st'), last WHERE commit_lsn = last.l
 GROUP BY op ORDER BY op;
SELECT count(*) FILTER (WHERE new->>'v' = 'gone' OR op = 'DELETE') AS rolled_back_rows
  FROM pgrpl.changes('st');

-- A streamed transaction that aborts leaves nothing: no row of it is left
-- and its transaction row (if any: a PostgreSQL 18 walsender may see the
-- abort before it streams anything) is not in progress.
BEGIN;
INSERT INTO st_t SELECT g, repeat('r', 100) FROM generate_series(10001, 13000) g;
ROLLBACK;
INSERT INTO st_t VALUES (9000, 'after the rollback');
SELECT public.wait_sub('st');
SELECT count(*) FILTER (WHERE t.state = 'i') AS in_progress, count(c.*) AS rows_left
  FROM pgrpl.transaction t
  JOIN pgrpl.subscription s ON s.sub_id = t.sub_id AND s.sub_name = 'st'
  LEFT JOIN pgrpl.change c ON c.sub_id = t.sub_id AND c.txn_id = t.txn_id
 WHERE t.state <> 'c';
SELECT count(*) AS visible_rollback_rows FROM pgrpl.changes('st') WHERE (new->>'id')::int > 10000;

-- What the read functions answer for streamed rows equals the table.
SELECT count(*) AS differences FROM (
    (SELECT to_jsonb(t) FROM st_t t
     EXCEPT ALL SELECT r FROM pgrpl.table_as_of('st', 'public.st_t') r)
    UNION ALL
    (SELECT r FROM pgrpl.table_as_of('st', 'public.st_t') r
     EXCEPT ALL SELECT to_jsonb(t) FROM st_t t)) d;
SELECT op, new->>'v' AS v FROM pgrpl.row_history('st', 'public.st_t', '{"id": 1000}');

-- The capture rules on the streamed messages themselves: the 'i' row at
-- the first change, a subtransaction's discard, the update at commit.
SELECT 'init' FROM pg_create_logical_replication_slot('st_slot', 'pgoutput');
BEGIN;
INSERT INTO st_t SELECT g, repeat('p', 100) FROM generate_series(20001, 21000) g;
SAVEPOINT s;
INSERT INTO st_t SELECT g, repeat('q', 100) FROM generate_series(21001, 22000) g;
ROLLBACK TO SAVEPOINT s;
INSERT INTO st_t VALUES (22001, 'z');
COMMIT;
CREATE TEMP TABLE st_msgs AS
SELECT m.lsn, m.data, m.ord
  FROM pg_logical_slot_peek_binary_changes('st_slot', NULL, NULL,
         'proto_version', '2', 'publication_names', 'st_pub', 'streaming', 'on')
       WITH ORDINALITY AS m(lsn, xid, data, ord);
SELECT chr(get_byte(data, 0)) AS type, count(*) > 0 AS seen
  FROM st_msgs WHERE chr(get_byte(data, 0)) IN ('S', 'E', 'c', 'A')
 GROUP BY 1 ORDER BY 1;
SELECT row->>'kind' AS kind, row->>'state' AS state, row->>'changes' AS changes,
       row->>'from_seq' AS from_seq
  FROM pgrpl.capture_preview((SELECT array_agg(data ORDER BY ord) FROM st_msgs),
                             (SELECT array_agg(lsn ORDER BY ord) FROM st_msgs))
       WITH ORDINALITY AS r(row, ord)
 WHERE row->>'kind' <> 'change' ORDER BY ord;
-- The row after the discard takes the first discarded seq.
SELECT row->>'seq' AS seq_of_last_row
  FROM pgrpl.capture_preview((SELECT array_agg(data ORDER BY ord) FROM st_msgs),
                             (SELECT array_agg(lsn ORDER BY ord) FROM st_msgs)) AS r(row)
 WHERE row->>'kind' = 'change' AND row->'new'->>'id' = '22001';
-- decode() describes the stream control messages.
SELECT jsonb_object_keys(pgrpl.decode(data)) AS key
  FROM (SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('c')) m ORDER BY 1;
-- Inside a stream block a change carries its (sub)transaction's xid first:
-- decode(message, in_stream => true) reads it.
SELECT k FROM (SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('I') LIMIT 1) m,
       jsonb_object_keys(pgrpl.decode(m.data, true)) k ORDER BY 1;
SELECT (pgrpl.decode(m.data, true)->>'xid')::bigint = (pgrpl.decode(s.data)->>'xid')::bigint AS same_xid
  FROM (SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('I') ORDER BY ord LIMIT 1) m,
       (SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('S') ORDER BY ord LIMIT 1) s;
-- A STREAM COMMIT of a transaction not being streamed, a stream block
-- inside another: protocol violations (the first names the xid: caught).
DO $$
BEGIN
    PERFORM pgrpl.capture_preview(ARRAY[(SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('c'))]);
EXCEPTION WHEN protocol_violation THEN
    RAISE NOTICE 'protocol violation: %', regexp_replace(SQLERRM, '[0-9]+', 'N');
END
$$;
SELECT pgrpl.capture_preview(ARRAY[(SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('S') LIMIT 1),
                                   (SELECT data FROM st_msgs WHERE get_byte(data, 0) = ascii('S') LIMIT 1)]);
SELECT pg_drop_replication_slot('st_slot');

-- streaming => false: protocol 1, a large transaction arrives whole.
SELECT pgrpl.alter_subscription('st', streaming => false);
SELECT public.poll_until($$SELECT proto_version = 1 FROM pgrpl.stat_subscription WHERE name = 'st'$$);
SELECT streamed_transactions AS streamed_before FROM pgrpl.stat_subscription WHERE name = 'st' \gset
INSERT INTO st_t SELECT g, repeat('w', 100) FROM generate_series(30001, 33000) g;
SELECT public.wait_sub('st');
SELECT streamed_transactions = :streamed_before AS not_streamed
  FROM pgrpl.stat_subscription WHERE name = 'st';
SELECT count(*) AS whole FROM pgrpl.changes('st') WHERE (new->>'id')::int BETWEEN 30001 AND 33000;
SELECT streaming FROM pgrpl.subscriptions WHERE name = 'st';

SELECT pgrpl.drop_subscription('st');
DROP PUBLICATION st_pub;
DROP TABLE st_t;
