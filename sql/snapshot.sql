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
-- has times as to_jsonb() gives them in UTC and intervals in the style
-- "postgres" (the stream's connection's settings).
CREATE FUNCTION public.same_as_primary(sub text, rel regclass) RETURNS TABLE (missing bigint, extra bigint)
LANGUAGE plpgsql VOLATILE SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH p AS (SELECT to_jsonb(t.*) AS r FROM %s t),
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

-- Values exactly as to_jsonb() gives them on the primary, both ways a copy
-- converts them: tables of built-in types only are sent as the columns'
-- text and converted here as the stream's values are; a table with a
-- user type gets the primary's to_jsonb().  A column named "t" must not
-- be taken for the row.
CREATE TYPE sn_mood AS ENUM ('sad', 'ok');
CREATE TABLE sn_ty (id int PRIMARY KEY, t text, b bool, c char(5), vc varchar(10), i2 int2, i8 int8,
                    f4 real, f8 float8, nu numeric, d date, ts timestamp, tz timestamptz, tm time,
                    tt timetz, iv interval, by bytea, js json, jb jsonb, ia int[], ta text[], ip inet,
                    ci cidr, ma macaddr, u uuid, bi bit(4), vb varbit, tv tsvector, pt point, mo money,
                    rg int4range, o oid, "quoted ""col"" x" text);
INSERT INTO sn_ty VALUES
  (1, 'a "quoted" \ back', true, 'ab', 'x', -32768, 9223372036854775807, 'NaN', '-Infinity', 'NaN',
   'infinity', '0044-03-15 BC 12:00', '2024-02-29 23:59:59.999999+05:30', '24:00', '12:00+03', '1 year -2 days 03:04:05.6',
   '\x00ff', '{"b": 1, "a": [1, 2.50, null], "b": 2}', '{"k": "ü\u00e9"}', '{1,NULL,3}', '{"a b",NULL,"","\\"}', '10.0.0.1/8',
   '10.0.0.0/8', '08:00:2b:01:02:03', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', B'1010', B'', 'a:1 fat:2 cat',
   '(1.5,-2)', 12.34, '[1,5)', 4294967295, 'q'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '☃ ünïcödé', false, 'abcde', '', 0, -1, 1.5e-45, 1e308, -0.000001234500, '2000-01-01', '2000-01-01',
   '1999-12-31 23:59:59+00', '00:00', '00:00:00.5-14:59', '0', '\x', '[]', '{}', '{}', '{}', '::1',
   '::/0', 'ff:ff:ff:ff:ff:ff', '00000000-0000-0000-0000-000000000000', B'0000', B'1', '', '(0,0)', -0.01,
   'empty', 0, '');
INSERT INTO sn_ty (id, t, f8, nu, tz, jb)
  SELECT g, 'r' || g, g / 3.0, g / 7.0, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
         jsonb_build_object('g', g, 'h', ARRAY[g, -g])
    FROM generate_series(4, 20003) g;
-- Chunks come as COPY text: what it escapes (tab, newline, carriage
-- return, backslash, other control characters) and its null marker \N
-- written as a value, in values, in arrays and in keys.
INSERT INTO sn_ty (id, t, vc, ta, js) VALUES
  (-1, E'tab\there\nnew\rline \\ back \\N \b\f\v', 'N', ARRAY[E'\\N', E'x\ty', NULL], '"\\N"'),
  (0, E'\\N', E'\t', ARRAY['N'], NULL);
CREATE TABLE sn_tyu (id int PRIMARY KEY, t text, m sn_mood, ms sn_mood[]);
INSERT INTO sn_tyu VALUES (1, 'x', 'ok', '{sad,ok}'), (2, NULL, NULL, NULL), (3, 'z', 'sad', '{}'),
  (4, E'\\N', NULL, NULL), (5, E'a\tb\nc\\', 'ok', '{}');
CREATE TABLE sn_esc (k text PRIMARY KEY, v int);
INSERT INTO sn_esc VALUES (E'a\tb', 1), (E'\\N', 2), ('N', 3), (E'line\nbreak', 4), (E'back\\slash', 5), ('', 6);
CREATE PUBLICATION sn_typub FOR TABLE sn_ty, sn_tyu, sn_esc;
SELECT pgrpl.create_subscription('sn_ty', public.loopback_conninfo(), ARRAY['sn_typub']) IS NOT NULL AS created;
SELECT public.wait_snapshot('sn_ty');
SELECT relation, state, rows_copied, chunks FROM pgrpl.stat_snapshot WHERE subscription = 'sn_ty' ORDER BY relation;
SELECT * FROM public.same_as_primary('sn_ty', 'sn_ty');
SELECT * FROM public.same_as_primary('sn_ty', 'sn_tyu');
SELECT * FROM public.same_as_primary('sn_ty', 'sn_esc');
SELECT r::text FROM pgrpl.table_as_of('sn_ty', 'sn_esc') r ORDER BY (r->>'v')::int;
-- Each value by itself, for the first three rows (none differs).  Times
-- and intervals as the stream's connection shows them (as pg_regress's do
-- not).
SET TimeZone = 'UTC';
SET IntervalStyle = 'postgres';
WITH s AS (SELECT new FROM pgrpl.changes('sn_ty', relation => 'public.sn_ty')
            WHERE op = 'SNAPSHOT' AND (new->>'id')::int <= 3)
SELECT p.id, e.key, e.value AS primary_value, s.new -> e.key AS copied
  FROM sn_ty p CROSS JOIN LATERAL jsonb_each(to_jsonb(p.*)) e
  LEFT JOIN s ON (s.new->>'id')::int = p.id
 WHERE p.id <= 3 AND e.value IS DISTINCT FROM s.new -> e.key
 ORDER BY 1, 2;
RESET TimeZone;
RESET IntervalStyle;
-- Keys too: row_history finds a row by the key the copy gave it.
SELECT op, new->>'t' AS t FROM pgrpl.row_history('sn_ty', 'sn_ty', '{"id": 3}');
SELECT op, new->'ms' AS ms FROM pgrpl.row_history('sn_ty', 'sn_tyu', '{"id": 1}');

SELECT pgrpl.drop_subscription('sn');
SELECT pgrpl.drop_subscription('sn_nocopy');
SELECT pgrpl.drop_subscription('sn_f');
SELECT pgrpl.drop_subscription('sn_root');
SELECT pgrpl.drop_subscription('sn_leaf');
SELECT pgrpl.drop_subscription('sn_w');
SELECT pgrpl.drop_subscription('sn_k');
SELECT pgrpl.drop_subscription('sn_ty');

-- A role without SELECT on a published table: the table's last_error
-- says so, streaming goes on, and the table is tried again (5 s after
-- the first failure, then at growing intervals) until it can be read.
CREATE ROLE sn_repl LOGIN REPLICATION;
CREATE TABLE sn_priv (id int PRIMARY KEY, v text);
INSERT INTO sn_priv VALUES (1, 'a'), (2, 'b');
CREATE PUBLICATION sn_privpub FOR TABLE sn_priv;
SELECT pgrpl.create_subscription('sn_priv', public.loopback_conninfo() || ' user=sn_repl',
                                 ARRAY['sn_privpub']) IS NOT NULL AS created;
SELECT public.poll_until($q$SELECT state = 'error' FROM pgrpl.stat_snapshot WHERE subscription = 'sn_priv'$q$);
SELECT state, last_error LIKE '%permission denied for table sn_priv%' AS says_why
  FROM pgrpl.stat_snapshot WHERE subscription = 'sn_priv';
INSERT INTO sn_priv VALUES (3, 'streamed meanwhile');
SELECT public.wait_sub('sn_priv');
SELECT op, new->>'v' AS v FROM pgrpl.changes('sn_priv', relation => 'public.sn_priv') ORDER BY commit_lsn, seq;
GRANT SELECT ON sn_priv TO sn_repl;
SELECT public.poll_until($q$SELECT state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 'sn_priv'$q$);
SELECT state, rows_copied, last_error FROM pgrpl.stat_snapshot WHERE subscription = 'sn_priv';
SELECT * FROM public.same_as_primary('sn_priv', 'sn_priv');
SELECT pgrpl.drop_subscription('sn_priv');
DROP PUBLICATION sn_privpub;
DROP TABLE sn_priv;
DROP ROLE sn_repl;
SELECT count(*) AS snapshot_rows_left FROM pgrpl.snapshot;
DROP PUBLICATION sn_pub, sn_fpub, sn_proot, sn_pleaf, sn_wpub, sn_kpub, sn_typub;
DROP TABLE sn_t, "Sn Two", sn_nokey, sn_later, sn_f, sn_p, sn_w, sn_k, sn_k2, sn_ty, sn_tyu, sn_esc;
DROP TYPE sn_mood;
DROP FUNCTION public.wait_snapshot(text), public.same_as_primary(text, regclass);
