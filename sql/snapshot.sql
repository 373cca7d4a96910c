--
-- snapshot: the rows a table had before capture started are copied into
-- the log as SNAPSHOT rows (copy_data, the default), in chunks of 10000
-- rows merged with the stream at watermarks; on demand with
-- pgrpl.snapshot(); for tables added later with refresh_subscription().
--
\set VERBOSITY terse

-- Bounded wait until every table of "sub" is copied (or failed).
CREATE FUNCTION public.wait_snapshot(sub text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT public.poll_until(format(
        'SELECT bool_and(state IN (''done'', ''error'')) FROM pgrpl.stat_snapshot
          WHERE subscription = %L', sub))
       AND public.wait_sub(sub)
$$;

-- The primary's table (this server) against the log's table_as_of(), which
-- has times as to_jsonb() gives them in UTC.
CREATE FUNCTION public.same_as_primary(sub text, rel regclass) RETURNS TABLE (missing bigint, extra bigint)
LANGUAGE plpgsql VOLATILE SET TimeZone = 'UTC' AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH p AS (SELECT to_jsonb(t) AS r FROM %s t),
              l AS (SELECT r FROM pgrpl.table_as_of(%L, %L) r)
         SELECT (SELECT count(*) FROM (SELECT r FROM p EXCEPT ALL SELECT r FROM l) x),
                (SELECT count(*) FROM (SELECT r FROM l EXCEPT ALL SELECT r FROM p) x)',
        rel, sub, rel::text);
END
$$;

CREATE TABLE sn_t (id int PRIMARY KEY, v text, n numeric, ts timestamptz, js jsonb);
INSERT INTO sn_t SELECT g, 'row ' || g, g / 7.0, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
                        jsonb_build_object('g', g)
  FROM generate_series(1, 25000) g;
-- Composite key, quoted names, unicode.
CREATE TABLE "Sn Two" ("Kä" text, k2 int, "Wert" text, PRIMARY KEY ("Kä", k2));
INSERT INTO "Sn Two" VALUES ('ä', 1, 'eins'), ('ä', 2, 'zwei'), ('b', 1, '☃'), ('a''b', 3, NULL);
-- No key (copied whole: see sn_k below).
CREATE TABLE sn_nokey (v text);
INSERT INTO sn_nokey VALUES ('x');
ALTER TABLE sn_nokey REPLICA IDENTITY FULL;
CREATE PUBLICATION sn_pub FOR TABLE sn_t, "Sn Two", sn_nokey;

SELECT pgrpl.create_subscription('sn', public.loopback_conninfo(), ARRAY['sn_pub']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn');
SELECT subscription, relation, state, rows_copied, chunks, last_error
  FROM pgrpl.stat_snapshot ORDER BY relation;
-- The copy went on while the primary changed the table; the stream and the
-- copy together equal the table.
SELECT * FROM public.same_as_primary('sn', 'sn_t');
SELECT * FROM public.same_as_primary('sn', '"Sn Two"');
SELECT op, count(*) FROM pgrpl.changes('sn') GROUP BY op ORDER BY op;
SELECT op, new FROM pgrpl.row_history('sn', 'public."Sn Two"', '{"Kä": "a''b", "k2": 3}');
-- Each chunk is the changes of its watermark's transaction.
SELECT changes FROM pgrpl.transactions('sn') ORDER BY commit_lsn;
SELECT state, last_error IS NULL AS no_error FROM pgrpl.stat_subscription WHERE name = 'sn';

-- Changes after the copy follow it.
UPDATE sn_t SET v = 'changed' WHERE id = 7;
DELETE FROM sn_t WHERE id = 8;
SELECT public.wait_sub('sn');
SELECT * FROM public.same_as_primary('sn', 'sn_t');
SELECT op, new->>'v' AS v FROM pgrpl.row_history('sn', 'sn_t', '{"id": 7}');

-- On demand: after a purge the log forgot the rows; a new snapshot brings
-- them back while streaming goes on.
SELECT pgrpl.purge('sn', (SELECT max(commit_lsn) FROM pgrpl.transactions('sn'))) > 0 AS purged;
SELECT count(*) AS rows_known FROM pgrpl.table_as_of('sn', 'sn_t');
SELECT pgrpl.snapshot('sn', 'sn_t');
SELECT public.wait_snapshot('sn');
SELECT * FROM public.same_as_primary('sn', 'sn_t');
SELECT relation, state, rows_copied FROM pgrpl.stat_snapshot WHERE relation = 'public.sn_t';

-- A table added to the publication later: refresh_subscription copies it.
CREATE TABLE sn_later (id int PRIMARY KEY, v text);
INSERT INTO sn_later VALUES (1, 'before'), (2, 'before');
ALTER PUBLICATION sn_pub ADD TABLE sn_later;
SELECT pgrpl.refresh_subscription('sn');
SELECT pgrpl.refresh_subscription('sn');    -- nothing new
SELECT public.wait_snapshot('sn');
SELECT * FROM public.same_as_primary('sn', 'sn_later');
SELECT relation, state, rows_copied FROM pgrpl.stat_snapshot WHERE relation = 'public.sn_later';

-- copy_data => false: the tables are known, nothing is copied.
SELECT pgrpl.create_subscription('sn_nocopy', public.loopback_conninfo(), ARRAY['sn_pub'],
                                 copy_data => false) IS NOT NULL AS created;
SELECT public.wait_sub('sn_nocopy');
SELECT relation, state, rows_copied FROM pgrpl.stat_snapshot WHERE subscription = 'sn_nocopy' ORDER BY relation;
SELECT count(*) AS changes FROM pgrpl.changes('sn_nocopy');

-- Row filters and column lists: what the publication publishes.
CREATE TABLE sn_f (id int PRIMARY KEY, keep boolean, secret text, v text);
INSERT INTO sn_f SELECT g, g % 2 = 0, 'secret ' || g, 'v' || g FROM generate_series(1, 10) g;
CREATE PUBLICATION sn_fpub FOR TABLE sn_f (id, keep, v) WHERE (keep);
SELECT pgrpl.create_subscription('sn_f', public.loopback_conninfo(), ARRAY['sn_fpub']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn_f');
SELECT new FROM pgrpl.changes('sn_f') ORDER BY (new->>'id')::int;

-- Partitioned tables, as the publication publishes them: through the root
-- (publish_via_partition_root), or leaf by leaf.
CREATE TABLE sn_p (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE sn_p1 PARTITION OF sn_p FOR VALUES FROM (0) TO (15000);
CREATE TABLE sn_p2 PARTITION OF sn_p FOR VALUES FROM (15000) TO (30000);
INSERT INTO sn_p SELECT g, 'p' || g FROM generate_series(1, 25000) g;
CREATE PUBLICATION sn_proot FOR TABLE sn_p WITH (publish_via_partition_root = true);
CREATE PUBLICATION sn_pleaf FOR TABLE sn_p WITH (publish_via_partition_root = false);
SELECT pgrpl.create_subscription('sn_root', public.loopback_conninfo(), ARRAY['sn_proot']) IS NOT NULL AS created;
SELECT pgrpl.create_subscription('sn_leaf', public.loopback_conninfo(), ARRAY['sn_pleaf']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn_root'), public.wait_snapshot('sn_leaf');
SELECT subscription, relation, state, rows_copied, chunks FROM pgrpl.stat_snapshot
 WHERE subscription IN ('sn_root', 'sn_leaf') ORDER BY 1, 2;
-- Then changes, one moving a row to the other partition.
UPDATE sn_p SET id = 29999 WHERE id = 3;
UPDATE sn_p SET v = 'changed' WHERE id = 20000;
DELETE FROM sn_p WHERE id = 4;
SELECT public.wait_sub('sn_root'), public.wait_sub('sn_leaf');
SELECT * FROM public.same_as_primary('sn_root', 'sn_p');
SELECT * FROM public.same_as_primary('sn_leaf', 'sn_p1');
SELECT * FROM public.same_as_primary('sn_leaf', 'sn_p2');
SELECT op, schema_name, table_name, new->>'id' AS id FROM pgrpl.changes('sn_leaf')
 WHERE op <> 'SNAPSHOT' ORDER BY commit_lsn, seq;

-- No key: the table is one chunk, read under one snapshot in pieces (by
-- ctid, 1024 blocks and at most 10000 rows or 16MB each), spooled, and
-- written at its one watermark.  With REPLICA IDENTITY FULL, table_as_of
-- rebuilds it; without, the rows are there but table_as_of refuses, as it
-- does for such tables' streamed changes.
CREATE TABLE sn_k (a int, b text);
INSERT INTO sn_k SELECT g % 1000, repeat('k', 50) || g FROM generate_series(1, 150000) g;
ALTER TABLE sn_k REPLICA IDENTITY FULL;
CREATE TABLE sn_k2 (v text);
INSERT INTO sn_k2 VALUES ('one'), ('two');
CREATE PUBLICATION sn_kpub FOR TABLE sn_k, sn_k2;
SELECT pgrpl.create_subscription('sn_k', public.loopback_conninfo(), ARRAY['sn_kpub']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn_k');
SELECT relation, state, rows_copied, chunks, last_error FROM pgrpl.stat_snapshot
 WHERE subscription = 'sn_k' ORDER BY relation;
SELECT * FROM public.same_as_primary('sn_k', 'sn_k');
UPDATE sn_k SET b = 'changed ' || b WHERE a = 5;
DELETE FROM sn_k WHERE a = 6;
INSERT INTO sn_k2 VALUES ('three');
SELECT public.wait_sub('sn_k');
SELECT * FROM public.same_as_primary('sn_k', 'sn_k');
SELECT op, new->>'v' AS v FROM pgrpl.changes('sn_k', relation => 'sn_k2') ORDER BY commit_lsn, seq;
SELECT count(*) FROM pgrpl.table_as_of('sn_k', 'sn_k2');

-- Wide rows: a chunk stops once its values take 16MB (plus its last row).
CREATE TABLE sn_w (id int PRIMARY KEY, v text);
INSERT INTO sn_w SELECT g, repeat(chr(96 + g), 6000000) FROM generate_series(1, 5) g;
CREATE PUBLICATION sn_wpub FOR TABLE sn_w;
SELECT pgrpl.create_subscription('sn_w', public.loopback_conninfo(), ARRAY['sn_wpub']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn_w');
SELECT relation, state, rows_copied, chunks FROM pgrpl.stat_snapshot WHERE subscription = 'sn_w';
SELECT * FROM public.same_as_primary('sn_w', 'sn_w');

SELECT pgrpl.drop_subscription('sn');
SELECT pgrpl.drop_subscription('sn_nocopy');
SELECT pgrpl.drop_subscription('sn_f');
SELECT pgrpl.drop_subscription('sn_root');
SELECT pgrpl.drop_subscription('sn_leaf');
SELECT pgrpl.drop_subscription('sn_w');
SELECT pgrpl.drop_subscription('sn_k');
SELECT count(*) AS snapshot_rows_left FROM pgrpl.snapshot;
DROP PUBLICATION sn_pub, sn_fpub, sn_proot, sn_pleaf, sn_wpub, sn_kpub;
DROP TABLE sn_t, "Sn Two", sn_nokey, sn_later, sn_f, sn_p, sn_w, sn_k, sn_k2;
DROP FUNCTION public.wait_snapshot(text), public.same_as_primary(text, regclass);
