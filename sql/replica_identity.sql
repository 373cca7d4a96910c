--
-- replica_identity: what "old" holds for UPDATE and DELETE under each
-- replica identity: the key, the full row, the index columns, or nothing.
--
\set VERBOSITY terse

-- DEFAULT (the primary key), with a two-column key.
CREATE TABLE ri_default (k1 int, k2 text, v text, w int, PRIMARY KEY (k1, k2));
-- FULL
CREATE TABLE ri_full (id int, v text, w int);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
-- USING INDEX: a unique index on NOT NULL columns other than the primary key.
CREATE TABLE ri_index (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL, v text);
CREATE UNIQUE INDEX ri_index_ab ON ri_index (a, b);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_ab;
-- NOTHING: published for INSERT only, since the primary refuses UPDATE and
-- DELETE of a table without replica identity that publishes them.
CREATE TABLE ri_nothing (id int PRIMARY KEY, v text);
ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING;
-- DEFAULT without a primary key is no replica identity either.
CREATE TABLE ri_nokey (id int, v text);

SELECT relname, relreplident FROM pg_class
 WHERE relname IN ('ri_default', 'ri_full', 'ri_index', 'ri_nothing', 'ri_nokey')
 ORDER BY relname;

CREATE PUBLICATION ri_pub FOR TABLE ri_default, ri_full, ri_index;
CREATE PUBLICATION ri_pub_ins FOR TABLE ri_nothing, ri_nokey WITH (publish = 'insert');
SELECT public.create_sub('ri', ARRAY['ri_pub', 'ri_pub_ins']);

INSERT INTO ri_default VALUES (1, 'a', 'one', 1), (2, 'b', 'two', 2);
INSERT INTO ri_full VALUES (1, 'one', 1), (2, NULL, 2);
INSERT INTO ri_index VALUES (1, 10, 'x', 'one'), (2, 20, 'y', 'two');
INSERT INTO ri_nothing VALUES (1, 'one');
INSERT INTO ri_nokey VALUES (1, 'one');

-- UPDATE not touching the key: no old tuple at all.
UPDATE ri_default SET v = 'uno' WHERE k1 = 1;
-- UPDATE of the key: the old key.
UPDATE ri_default SET k2 = 'c' WHERE k1 = 2;
-- DELETE: the old key only.
DELETE FROM ri_default WHERE k1 = 1;

-- FULL: the whole old row, every time (NULLs included).
UPDATE ri_full SET v = 'uno' WHERE id = 1;
UPDATE ri_full SET w = 20 WHERE id = 2;
DELETE FROM ri_full WHERE id = 1;

-- USING INDEX: the index columns, when they change or on DELETE.
UPDATE ri_index SET v = 'uno' WHERE id = 1;
UPDATE ri_index SET b = 'z' WHERE id = 2;
DELETE FROM ri_index WHERE id = 1;

-- NOTHING: updates and deletes are not published, so not captured.
UPDATE ri_nothing SET v = 'uno';
DELETE FROM ri_nothing;
UPDATE ri_nokey SET v = 'uno';
DELETE FROM ri_nokey;

SELECT public.wait_sub('ri');
SELECT * FROM public.captured('ri');
SELECT max(txn) AS seen FROM public.captured('ri') \gset

-- In a publication that publishes updates, the primary refuses them.
ALTER PUBLICATION ri_pub ADD TABLE ri_nothing;
UPDATE ri_nothing SET v = 'refused';
DELETE FROM ri_nothing;
ALTER PUBLICATION ri_pub DROP TABLE ri_nothing;

-- Changing the replica identity while streaming: the next change uses it.
ALTER TABLE ri_default REPLICA IDENTITY FULL;
UPDATE ri_default SET w = 22;
ALTER TABLE ri_full REPLICA IDENTITY DEFAULT;
ALTER TABLE ri_full ADD PRIMARY KEY (id);
UPDATE ri_full SET id = 3;
DELETE FROM ri_full;
SELECT public.wait_sub('ri');
SELECT * FROM public.captured('ri') WHERE txn > :seen;

-- FULL with an out-of-line value: the old row has it in full; the new row
-- of an update that leaves it alone names it in "unchanged".
CREATE TABLE ri_full_toast (id int, big text, w int);
ALTER TABLE ri_full_toast ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE ri_full_toast REPLICA IDENTITY FULL;
ALTER PUBLICATION ri_pub ADD TABLE ri_full_toast;
INSERT INTO ri_full_toast SELECT 1, string_agg(md5(i::text), '' ORDER BY i), 1
  FROM generate_series(1, 1000) i;
UPDATE ri_full_toast SET w = 2;
DELETE FROM ri_full_toast;
SELECT public.wait_sub('ri');
WITH orig AS (SELECT string_agg(md5(i::text), '' ORDER BY i) AS v
                FROM generate_series(1, 1000) i)
SELECT c.seq, c.op, c.old - 'big' AS old_without_big, c.old->>'big' = orig.v AS old_big,
       c.new - 'big' AS new_without_big, c.new->>'big' = orig.v AS new_big, c.unchanged
  FROM pgrpl.changes('ri') c, orig
 WHERE c.table_name = 'ri_full_toast' ORDER BY c.commit_lsn, c.seq;

SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('ri');
DROP PUBLICATION ri_pub, ri_pub_ins;
DROP TABLE ri_default, ri_full, ri_index, ri_nothing, ri_nokey, ri_full_toast;
