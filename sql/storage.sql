--
-- storage: the 2.0 layout.  The relation dictionary (a column added on the
-- primary is a new version), partitions by subscription and txn_id range,
-- visibility through the transaction row (rows of a transaction that never
-- committed stay invisible and are reclaimed), purge() dropping whole
-- partitions, retention applied by the worker, drop_subscription() dropping
-- the subscription's tables.
--
\set VERBOSITY terse

-- Small partitions, so that this test spans several (the worker started
-- below reads the setting at its start; "several_partitions" checks it).
ALTER SYSTEM SET pgrpl.partition_size = 100;
SELECT pg_reload_conf();

CREATE TABLE st_a (id int PRIMARY KEY, v text);
CREATE TABLE st_b (id int PRIMARY KEY, w int);
CREATE PUBLICATION st_pub FOR TABLE st_a, st_b;
SELECT public.create_sub('st', ARRAY['st_pub']);
SELECT sub_id AS sid FROM pgrpl.subscription WHERE sub_name = 'st' \gset

-- 250 transactions of one change each, then a second relation.
DO $$
BEGIN
    FOR i IN 1..250 LOOP
        INSERT INTO st_a VALUES (i, 'a' || i);
        COMMIT;
    END LOOP;
END
$$;
INSERT INTO st_b VALUES (1, 10);
SELECT public.wait_sub('st');
SELECT pg_current_wal_lsn() AS mid \gset
SELECT count(*) AS before_mid FROM pgrpl.changes('st') \gset

-- A column added on the primary: the next change of st_b is a new version.
ALTER TABLE st_b ADD COLUMN extra text;
INSERT INTO st_b VALUES (2, 20, 'x');
DO $$
BEGIN
    FOR i IN 1..150 LOOP
        UPDATE st_a SET v = 'b' || i WHERE id = i;
        COMMIT;
    END LOOP;
END
$$;
SELECT public.wait_sub('st');

SELECT schema_name, table_name, replica_identity, columns, column_types, key_columns
  FROM pgrpl.relations('st');
-- Each change refers to the version it was captured with.
SELECT r.columns, count(*) AS changes
  FROM pgrpl.change c JOIN pgrpl.relation r USING (rel_id)
 WHERE c.sub_id = :sid AND r.table_name = 'st_b'
 GROUP BY r.columns ORDER BY 2;
SELECT count(*) AS changes, count(DISTINCT commit_lsn) AS transactions
  FROM pgrpl.changes('st');

-- The log spans several partitions of the subscription; a transaction is
-- never split across them (each row sits in its txn_id's range).
SELECT count(*) > 3 AS several_partitions
  FROM pg_partition_tree(format('pgrpl.change_%s', :sid)::regclass) WHERE isleaf;
SELECT count(*) AS misplaced
  FROM pgrpl.change c JOIN pg_class p ON p.oid = c.tableoid
 WHERE c.sub_id = :sid AND p.relname <> format('change_%s_%s', :sid, c.txn_id >> 32);

-- Rows of transactions that have not committed here (in progress, or
-- aborted) are written but invisible to every read function.
SELECT pgrpl.ensure_partition(:sid, 1000), pgrpl.ensure_partition(:sid, 1001);
INSERT INTO pgrpl.transaction (sub_id, changes, txn_id, xid, state)
VALUES (:sid, 1, 1000::bigint << 32, 1, 'a'), (:sid, 1, 1001::bigint << 32, 2, 'i');
INSERT INTO pgrpl.change (sub_id, seq, txn_id, lsn, key_hash, rel_id, op, row_key, new)
SELECT :sid, 1, t.txn_id, '0/1', pgrpl.row_key_hash('{"id": 1}'), r.rel_id, 'U', '{"id": 1}',
       '{"id": 1, "v": "never committed"}'
  FROM (VALUES (1000::bigint << 32), (1001::bigint << 32)) t(txn_id),
       pgrpl.relation r WHERE r.sub_id = :sid AND r.table_name = 'st_a';
SELECT count(*) AS visible_changes FROM pgrpl.changes('st') WHERE new->>'v' = 'never committed';
SELECT count(*) AS visible_history FROM pgrpl.row_history('st', 'st_a', '{"id": 1}')
 WHERE new->>'v' = 'never committed';
SELECT t->>'v' AS row_1 FROM pgrpl.table_as_of('st', 'st_a') t WHERE t->>'id' = '1';
SELECT count(*) AS listed FROM pgrpl.transactions('st') WHERE xid IN (1, 2);

-- purge(): exactly the transactions before the bound are gone; whole
-- partitions are dropped (the aborted one too), the straddling one keeps
-- its newer transactions, the one in progress is kept.
SELECT count(*) AS partitions_before
  FROM pg_partition_tree(format('pgrpl.change_%s', :sid)::regclass) WHERE isleaf \gset
SELECT pgrpl.purge('st', :'mid'::pg_lsn) = :before_mid AS removed_exactly;
SELECT count(*) FILTER (WHERE commit_lsn < :'mid'::pg_lsn) AS older_left,
       count(*) AS left
  FROM pgrpl.changes('st');
SELECT count(*) < :partitions_before AS partitions_dropped
  FROM pg_partition_tree(format('pgrpl.change_%s', :sid)::regclass) WHERE isleaf;
SELECT to_regclass(format('pgrpl.change_%s_1000', :sid)) IS NULL AS aborted_reclaimed,
       to_regclass(format('pgrpl.change_%s_1001', :sid)) IS NOT NULL AS in_progress_kept;
-- what is left still rebuilds: rows changed after the bound
SELECT count(*) AS rows_after_purge FROM pgrpl.table_as_of('st', 'st_a');
SELECT pgrpl.purge('st', :'mid'::pg_lsn) AS purged_again;
DELETE FROM pgrpl.transaction WHERE sub_id = :sid AND state = 'i';

-- The subscription goes on capturing after its partitions were dropped.
INSERT INTO st_a VALUES (1000, 'after purge');
SELECT public.wait_sub('st');
SELECT op, new FROM pgrpl.row_history('st', 'st_a', '{"id": 1000}');

-- Large values (old, new, a message's content) are compressed by the
-- worker, TOAST only moves them out of line (storage EXTERNAL, in every
-- partition).  A value of 4 kB or more is compressed only if a sample from
-- its middle compresses: hex of random bytes is stored as it is.  Smaller
-- ones are compressed whole, as TOAST would, once the row is over 2 kB.
SELECT count(*) > 3 AS columns_seen, count(*) FILTER (WHERE a.attstorage <> 'e') AS not_external
  FROM pg_attribute a
 WHERE a.attrelid IN (SELECT relid FROM pg_partition_tree('pgrpl.change'))
   AND a.attname IN ('old', 'new', 'message_content');
INSERT INTO st_a VALUES
    (3001, repeat('a compressible text ', 1000)),
    (3002, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i)),
    (3003, repeat('ab', 1500)),
    (3004, 'small');
SELECT pg_logical_emit_message(true, 'st', repeat('message ', 1000)) IS NOT NULL AS emitted;
SELECT public.wait_sub('st');
SELECT c.op, COALESCE(c.new->>'id', c.message_prefix) AS row,
       length(COALESCE(c.new->>'v', convert_from(c.message_content, 'UTF8'))) AS length,
       pg_column_compression(c.new) IS NOT NULL AS new_compressed,
       pg_column_compression(c.message_content) IS NOT NULL AS content_compressed,
       COALESCE(c.new->>'v' = s.v, true) AS same_value
  FROM pgrpl.change c LEFT JOIN st_a s ON s.id = (c.new->>'id')::int
 WHERE c.sub_id = :sid AND ((c.new->>'id')::int >= 3001 OR c.op = 'M')
 ORDER BY c.txn_id, c.seq;

-- The log's own end bounds what is captured again: a worker whose origin
-- lost its progress (dropping the origin clears it at once, even when a
-- drop_subscription rolls back) and whose slot is behind does not capture
-- a transaction twice.
SELECT pg_copy_logical_replication_slot('st', 'st_behind') IS NOT NULL AS copied;
INSERT INTO st_a VALUES (2000, 'once');
SELECT public.wait_sub('st');
SELECT pgrpl.disable_subscription('st');
SELECT public.wait_stopped('st');
SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin
 WHERE roname = format('pgrpl_%s_%s', (SELECT oid FROM pg_database WHERE datname = current_database()), :sid);
UPDATE pgrpl.subscription SET slot_name = 'st_behind' WHERE sub_id = :sid;
SELECT pgrpl.enable_subscription('st');
INSERT INTO st_a VALUES (2001, 'after');
SELECT public.wait_sub('st');
SELECT new->>'id' AS id, count(*) FROM pgrpl.changes('st')
 WHERE new->>'id' IN ('2000', '2001') GROUP BY 1 ORDER BY 1;
SELECT pgrpl.disable_subscription('st');
SELECT public.wait_stopped('st');
UPDATE pgrpl.subscription SET slot_name = 'st' WHERE sub_id = :sid;
SELECT public.poll_until($$SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'st_behind'$$);
SELECT pg_drop_replication_slot('st_behind');
SELECT pgrpl.enable_subscription('st');

-- Retention: the worker purges what committed longer ago by itself.
SELECT pgrpl.set_retention('st', interval '-1 day');
SELECT pgrpl.set_retention('st', interval '1 millisecond');
SELECT retention FROM pgrpl.subscriptions WHERE name = 'st';
-- (A reader holding the log open postpones it: poll in short transactions.)
CREATE PROCEDURE pg_temp.wait_purged(INOUT purged boolean DEFAULT false)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        purged := NOT EXISTS (SELECT FROM pgrpl.changes('st'));
        EXIT WHEN purged OR clock_timestamp() > deadline;
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
CALL pg_temp.wait_purged();
SELECT pgrpl.set_retention('st', NULL);
SELECT retention FROM pgrpl.subscriptions WHERE name = 'st';
SELECT pgrpl.alter_subscription('st', retention => interval '30 days');
SELECT retention FROM pgrpl.subscriptions WHERE name = 'st';

-- drop_subscription drops the subscription's tables and versions.
SELECT pgrpl.drop_subscription('st');
SELECT count(*) AS tables_left FROM pg_class
 WHERE relnamespace = 'pgrpl'::regnamespace
   AND relname ~ ('^(change|transaction)_' || :sid || '(_|$)');
SELECT count(*) AS versions_left FROM pgrpl.relation WHERE sub_id = :sid;

DROP PUBLICATION st_pub;
DROP TABLE st_a, st_b;
ALTER SYSTEM RESET pgrpl.partition_size;
SELECT pg_reload_conf();
