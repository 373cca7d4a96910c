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
-- No key to copy by.
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

SELECT pgrpl.drop_subscription('sn');
SELECT pgrpl.drop_subscription('sn_nocopy');
SELECT pgrpl.drop_subscription('sn_f');
SELECT count(*) AS snapshot_rows_left FROM pgrpl.snapshot;
DROP PUBLICATION sn_pub, sn_fpub;
DROP TABLE sn_t, "Sn Two", sn_nokey, sn_later, sn_f;
DROP FUNCTION public.wait_snapshot(text), public.same_as_primary(text, regclass);
