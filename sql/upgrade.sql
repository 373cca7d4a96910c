--
-- upgrade: ALTER EXTENSION pgrpl UPDATE from 1.0 gives what a fresh
-- install of the default version gives; and a log captured in the 1.1
-- layout reads the same through every read function after the update to
-- 2.0, and the subscription goes on capturing after it.  Runs after
-- teardown; leaves a fresh default install behind.
--
\set VERBOSITY terse

-- What makes up the installed extension: its members, the source of its
-- functions, the change log's columns (with compression) and indexes.
CREATE FUNCTION pg_temp.pgrpl_shape() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, 0)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'pgrpl' AND d.deptype = 'e'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
      FROM pg_proc p WHERE p.pronamespace = 'pgrpl'::regnamespace AND p.prokind <> 'a'
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull || ' ' || a.attcompression::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     WHERE c.relnamespace = 'pgrpl'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'pgrpl'::regnamespace
    UNION ALL
    SELECT 'comment ' || pg_describe_object(classoid, objoid, objsubid) || ' ' || description
      FROM pg_description
     WHERE classoid = 'pg_proc'::regclass
       AND objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'pgrpl'::regnamespace)
$$;

-- A capture to upgrade: keys, a key change, TOASTed values left
-- unchanged, a delete, a truncate, messages in and out of transactions.
CREATE TABLE up_t (id int PRIMARY KEY, v text, big text);
ALTER TABLE up_t ALTER big SET STORAGE EXTERNAL;
CREATE TABLE up_u (k text PRIMARY KEY, n int);
CREATE PUBLICATION up_pub FOR TABLE up_t, up_u;
SELECT public.create_sub('up', ARRAY['up_pub']);
INSERT INTO up_t SELECT i, 'v' || i, repeat(md5(i::text), 100) FROM generate_series(1, 5) i;
INSERT INTO up_u VALUES ('a', 1), ('b', 2);
SELECT pg_current_wal_lsn() AS mid_lsn \gset
BEGIN;
UPDATE up_t SET v = 'changed' WHERE id = 2;
UPDATE up_t SET id = 20 WHERE id = 3;
SELECT pg_logical_emit_message(true, 'up_tx', 'in a transaction') IS NOT NULL AS msg;
COMMIT;
SELECT pg_logical_emit_message(false, 'up_nontx', 'on its own') IS NOT NULL AS msg;
DELETE FROM up_t WHERE id = 4;
TRUNCATE up_u;
INSERT INTO up_u VALUES ('c', 3);
SELECT public.wait_sub('up');

-- What every read function says before the update.  (A SQL function's
-- body is parsed when it runs: it reads whatever pgrpl is installed then.)
CREATE FUNCTION pg_temp.reads(mid pg_lsn) RETURNS TABLE (what text, v jsonb)
LANGUAGE sql AS $$
SELECT 'history 2' AS what, to_jsonb(h) AS v FROM pgrpl.row_history('up', 'up_t', '{"id": 2}') h
UNION ALL SELECT 'history 20', to_jsonb(h) FROM pgrpl.row_history('up', 'up_t', '{"id": 3}') h
UNION ALL SELECT 'as_of now', t FROM pgrpl.table_as_of('up', 'up_t') t
UNION ALL SELECT 'as_of mid', t FROM pgrpl.table_as_of('up', 'up_t', mid) t
UNION ALL SELECT 'u now', t FROM pgrpl.table_as_of('up', 'up_u') t
UNION ALL SELECT 'u mid', t FROM pgrpl.table_as_of('up', 'up_u', mid) t
UNION ALL SELECT 'rel changes', to_jsonb(c) FROM pgrpl.changes('up', relation => 'up_u') c
UNION ALL SELECT 'max_rows', to_jsonb(c) FROM pgrpl.changes('up', max_rows => 3) c;
$$;
CREATE TEMP TABLE before_changes AS SELECT * FROM pgrpl.changes('up');
CREATE TEMP TABLE before_txns AS SELECT * FROM pgrpl.transactions('up');
CREATE TEMP TABLE before_reads AS SELECT * FROM pg_temp.reads(:'mid_lsn');
SELECT count(*) AS changes, count(DISTINCT commit_lsn) AS units FROM before_changes;

-- The same log in the layout 1.1 wrote: one row per change with its
-- transaction's commit LSN and the relation's names; messages outside a
-- transaction have no transaction row.
SELECT pgrpl.disable_subscription('up');
SELECT public.wait_stopped('up');
CREATE TEMP TABLE old_sub AS
SELECT sub_id, sub_name, conninfo, publications, slot_name, system_identifier, start_lsn
  FROM pgrpl.subscription;
CREATE TEMP TABLE old_change AS
SELECT c.sub_id, t.commit_lsn, c.seq, c.lsn, c.op, r.schema_name, r.table_name,
       c.old, c.new, c.unchanged, c.message_prefix, c.message_content, c.row_key, c.old_key
  FROM pgrpl.change c JOIN pgrpl.transaction t USING (sub_id, txn_id)
  LEFT JOIN pgrpl.relation r USING (rel_id)
 WHERE t.commit_lsn IS NOT NULL;
CREATE TEMP TABLE old_txn AS
SELECT sub_id, commit_lsn, end_lsn, xid, commit_time, origin, origin_lsn, changes
  FROM pgrpl.transaction WHERE state = 'c';
SELECT pg_replication_origin_progress(roname, false) AS progress
  FROM pg_replication_origin \gset
SELECT pgrpl.drop_subscription('up', drop_slot => false);
DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl VERSION '1.1';
INSERT INTO pgrpl.subscription (sub_id, sub_name, enabled, conninfo, publications,
                                slot_name, system_identifier, start_lsn)
OVERRIDING SYSTEM VALUE
SELECT sub_id, sub_name, false, conninfo, publications, slot_name, system_identifier, start_lsn
  FROM old_sub;
INSERT INTO pgrpl.transaction SELECT * FROM old_txn;
INSERT INTO pgrpl.change (sub_id, commit_lsn, seq, lsn, op, schema_name, table_name, old, new,
                          unchanged, message_prefix, message_content, row_key, key_hash, old_key)
SELECT sub_id, commit_lsn, seq, lsn, op, schema_name, table_name, old, new, unchanged,
       message_prefix, message_content, row_key,
       pgrpl.key_hash(schema_name, table_name, row_key), old_key
  FROM old_change;
-- The origin survives an upgrade; here it was dropped with the subscription.
SELECT pg_replication_origin_create('pgrpl_' || d.oid || '_' || s.sub_id) IS NOT NULL AS origin
  FROM pg_database d, old_sub s WHERE d.datname = current_database();
SELECT pg_replication_origin_advance(roname, :'progress') FROM pg_replication_origin;

-- A 2.0 library does not write into a 1.1 schema: the worker refuses.
SELECT pgrpl.enable_subscription('up');
SELECT public.poll_until($$SELECT last_error IS NOT NULL FROM pgrpl.stat_subscription$$);
SELECT state, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.disable_subscription('up');
SELECT public.wait_stopped('up');

ALTER EXTENSION pgrpl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pgrpl';

-- Every read function says the same as before (nothing missing, nothing more).
SELECT (SELECT count(*) FROM (TABLE before_changes EXCEPT ALL SELECT * FROM pgrpl.changes('up')) x) AS lost,
       (SELECT count(*) FROM (SELECT * FROM pgrpl.changes('up') EXCEPT ALL TABLE before_changes) x) AS gained;
SELECT (SELECT count(*) FROM (TABLE before_txns EXCEPT ALL SELECT * FROM pgrpl.transactions('up')) x) AS lost,
       (SELECT count(*) FROM (SELECT * FROM pgrpl.transactions('up') EXCEPT ALL TABLE before_txns) x) AS gained;
CREATE TEMP TABLE after_reads AS SELECT * FROM pg_temp.reads(:'mid_lsn');
SELECT what, count(*) AS rows FROM before_reads GROUP BY what ORDER BY what;
(SELECT 'lost' AS d, * FROM before_reads EXCEPT ALL SELECT 'lost', * FROM after_reads)
UNION ALL
(SELECT 'gained', * FROM after_reads EXCEPT ALL SELECT 'gained', * FROM before_reads);
-- Relation versions rebuilt from the 1.1 rows (types were not recorded).
SELECT schema_name, table_name, columns, column_types, key_columns FROM pgrpl.relations('up');
-- 2.3: the large values' columns of every change table, partitions made
-- before the update included, have storage EXTERNAL (the worker compresses).
SELECT count(*) AS columns, count(*) FILTER (WHERE a.attstorage <> 'e') AS not_external
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'pgrpl'::regnamespace AND c.relname ~ '^change($|_)'
   AND a.attname IN ('old', 'new', 'message_content');

-- The subscription captures on from where it was, after the migrated log.
SELECT pgrpl.enable_subscription('up');
INSERT INTO up_t VALUES (6, 'after the update', 'x');
SELECT public.wait_sub('up');
SELECT count(*) AS new_changes, bool_and(c.commit_lsn > (SELECT max(commit_lsn) FROM before_changes)) AS after_old
  FROM pgrpl.changes('up') c WHERE NOT EXISTS (SELECT FROM before_changes b WHERE b.commit_lsn = c.commit_lsn);
SELECT op, new FROM pgrpl.row_history('up', 'up_t', '{"id": 6}');
SELECT pgrpl.drop_subscription('up');
DROP PUBLICATION up_pub;
DROP TABLE up_t, up_u;

-- 2.1 recreates transactions() (its result type changed): a reader role's
-- EXECUTE on it survives the update, and PUBLIC still has none.
DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl VERSION '2.0';
CREATE ROLE regress_up_reader NOLOGIN;
GRANT EXECUTE ON FUNCTION pgrpl.transactions(text, pg_lsn, bigint) TO regress_up_reader;
ALTER EXTENSION pgrpl UPDATE TO '2.1';
SELECT has_function_privilege('regress_up_reader', 'pgrpl.transactions(text, pg_lsn, bigint)',
                              'EXECUTE') AS reader_kept,
       NOT EXISTS (SELECT FROM pg_proc p, aclexplode(p.proacl) a
                    WHERE p.oid = 'pgrpl.transactions(text, pg_lsn, bigint)'::regprocedure
                      AND a.grantee = 0) AS not_public;
REVOKE EXECUTE ON FUNCTION pgrpl.transactions(text, pg_lsn, bigint) FROM regress_up_reader;
-- From 17 on, the grant the update script made is also an initial privilege
-- of the extension (pg_init_privs) that the role depends on.
DROP OWNED BY regress_up_reader;
DROP ROLE regress_up_reader;

-- 1.0 updated to the default version is what a fresh install gives.
DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pgrpl';
ALTER EXTENSION pgrpl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pgrpl';
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.pgrpl_shape() s;
DROP EXTENSION pgrpl;
CREATE EXTENSION pgrpl;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.pgrpl_shape() s;
SELECT (SELECT count(*) FROM fresh) > 50 AS shape_is_seen;
-- no difference either way
(SELECT * FROM fresh EXCEPT SELECT * FROM upgraded)
UNION ALL
(SELECT * FROM upgraded EXCEPT SELECT * FROM fresh);
