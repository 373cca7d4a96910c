--
-- truncate: one TRUNCATE row per truncated relation, in one transaction;
-- several tables in one statement; CASCADE.
--
\set VERBOSITY terse

CREATE TABLE trunc_a (id int PRIMARY KEY);
CREATE TABLE trunc_b (id int PRIMARY KEY);
CREATE TABLE trunc_c (id int PRIMARY KEY);
CREATE TABLE trunc_parent (id int PRIMARY KEY);
CREATE TABLE trunc_child (id int PRIMARY KEY, parent int REFERENCES trunc_parent);
CREATE TABLE trunc_grandchild (id int PRIMARY KEY, child int REFERENCES trunc_child);
CREATE TABLE trunc_unpublished (id int PRIMARY KEY);
CREATE TABLE trunc_noop (id int PRIMARY KEY);
CREATE PUBLICATION trunc_pub FOR TABLE trunc_a, trunc_b, trunc_c,
    trunc_parent, trunc_child, trunc_grandchild;
-- A publication that does not publish truncates.
CREATE PUBLICATION trunc_pub_nt FOR TABLE trunc_noop WITH (publish = 'insert, update, delete');
SELECT public.create_sub('trunc', ARRAY['trunc_pub', 'trunc_pub_nt']);

INSERT INTO trunc_a VALUES (1);
INSERT INTO trunc_b VALUES (1);
INSERT INTO trunc_parent VALUES (1);
INSERT INTO trunc_child VALUES (1, 1);
INSERT INTO trunc_grandchild VALUES (1, 1);
INSERT INTO trunc_noop VALUES (1);

-- One table.
TRUNCATE trunc_c;
-- Several tables in one statement, one of them not published.
TRUNCATE trunc_a, trunc_unpublished, trunc_b;
-- CASCADE: the referencing tables are truncated (and captured) too.
TRUNCATE trunc_parent CASCADE;
-- Not published for truncate: nothing.
TRUNCATE trunc_noop;
-- Inside a transaction with other changes, in order.
BEGIN;
INSERT INTO trunc_a VALUES (2);
TRUNCATE trunc_a, trunc_c RESTART IDENTITY;
INSERT INTO trunc_a VALUES (3);
COMMIT;
-- Rolled back: nothing.
BEGIN;
TRUNCATE trunc_b;
ROLLBACK;
SELECT public.wait_sub('trunc');

SELECT txn, seq, op, schema_name, table_name, old, new FROM public.captured('trunc');
SELECT count(*) FILTER (WHERE op = 'INSERT') AS inserts,
       count(*) FILTER (WHERE op = 'TRUNCATE') AS truncates
  FROM pgrpl.changes('trunc');
-- The rows of one TRUNCATE statement share their transaction.
SELECT count(DISTINCT commit_lsn) AS transactions
  FROM pgrpl.changes('trunc') WHERE op = 'TRUNCATE';

SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('trunc');
DROP PUBLICATION trunc_pub, trunc_pub_nt;
DROP TABLE trunc_a, trunc_b, trunc_c, trunc_grandchild, trunc_child, trunc_parent,
    trunc_unpublished, trunc_noop;
