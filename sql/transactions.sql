--
-- transactions: one captured transaction per remote transaction, changes
-- numbered in order; multi-table transactions; rollback and savepoints.
--
\set VERBOSITY terse

CREATE TABLE tx_a (id int PRIMARY KEY, v text);
CREATE TABLE tx_b (id int PRIMARY KEY, v text);
CREATE TABLE tx_unpublished (id int PRIMARY KEY);
CREATE PUBLICATION tx_pub FOR TABLE tx_a, tx_b;
SELECT public.create_sub('tx', ARRAY['tx_pub']);

-- 1: several tables, several operations.
BEGIN;
INSERT INTO tx_a VALUES (1, 'a1');
INSERT INTO tx_b VALUES (1, 'b1');
UPDATE tx_a SET v = 'a1 updated' WHERE id = 1;
INSERT INTO tx_unpublished VALUES (1);
DELETE FROM tx_b WHERE id = 1;
INSERT INTO tx_b VALUES (2, 'b2');
COMMIT;

-- Rolled back: nothing.
BEGIN;
INSERT INTO tx_a VALUES (100, 'rolled back');
UPDATE tx_a SET v = 'rolled back';
DELETE FROM tx_b;
ROLLBACK;

-- Only unpublished tables: nothing (not even an empty transaction).
INSERT INTO tx_unpublished VALUES (2);

-- 2: savepoints: rolled-back subtransactions leave nothing, released ones
-- and the parts before and after them stay, in order.
BEGIN;
INSERT INTO tx_a VALUES (2, 'before savepoint');
SAVEPOINT s1;
INSERT INTO tx_a VALUES (101, 'rolled back to s1');
UPDATE tx_a SET v = 'rolled back to s1' WHERE id = 1;
SAVEPOINT s2;
INSERT INTO tx_b VALUES (102, 'rolled back with s1');
ROLLBACK TO SAVEPOINT s1;
INSERT INTO tx_a VALUES (3, 'after rollback to s1');
SAVEPOINT s3;
INSERT INTO tx_b VALUES (3, 'released s3');
RELEASE SAVEPOINT s3;
SAVEPOINT s4;
DELETE FROM tx_a WHERE id = 2;
ROLLBACK TO SAVEPOINT s4;
UPDATE tx_b SET v = 'updated after s4' WHERE id = 3;
COMMIT;

-- A transaction whose every change was rolled back to a savepoint.
BEGIN;
SAVEPOINT s1;
INSERT INTO tx_a VALUES (103, 'rolled back');
ROLLBACK TO SAVEPOINT s1;
COMMIT;

-- An error rolls back the whole transaction.
BEGIN;
INSERT INTO tx_a VALUES (104, 'aborted');
INSERT INTO tx_a VALUES (1, 'duplicate key');
COMMIT;

-- 3: a subtransaction that wrote first (the change is in a subxact).
BEGIN;
SAVEPOINT s1;
INSERT INTO tx_b VALUES (4, 'in released subxact');
RELEASE SAVEPOINT s1;
INSERT INTO tx_a VALUES (4, 'in top');
COMMIT;

-- 4: a big transaction (spilled to disk by the primary's decoder).
INSERT INTO tx_a SELECT i, 'bulk ' || i FROM generate_series(1000, 5999) i;

-- 5, 6: two single-statement transactions.
UPDATE tx_a SET v = 'last' WHERE id = 1;
DELETE FROM tx_a WHERE id >= 1000;
SELECT public.wait_sub('tx');

SELECT * FROM public.captured('tx') WHERE (coalesce(new, old)->>'id')::int < 1000;
-- One transaction row per captured transaction; its change count, and the
-- changes numbered 1..n without gaps.
SELECT dense_rank() OVER (ORDER BY t.commit_lsn) AS txn, t.changes,
       (SELECT count(*) FROM pgrpl.change c
         WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id) AS rows,
       (SELECT max(seq) FROM pgrpl.change c
         WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id) AS max_seq
  FROM pgrpl.transaction t ORDER BY t.commit_lsn;
-- Within a transaction, change LSNs grow with seq, and precede the commit.
SELECT bool_and(ordered) AS lsn_order
  FROM (SELECT lsn >= lag(lsn) OVER (PARTITION BY commit_lsn ORDER BY seq)
               AND lsn < commit_lsn AS ordered
          FROM pgrpl.changes('tx')) s
 WHERE ordered IS NOT NULL;
-- Every change of a transaction carries its xid and commit time.
SELECT count(DISTINCT xid) AS xids, count(DISTINCT commit_time) AS commit_times,
       count(*) FILTER (WHERE xid IS NULL OR commit_time IS NULL) AS missing
  FROM pgrpl.changes('tx');
-- Nothing rolled back was captured.
SELECT count(*) AS rolled_back FROM pgrpl.changes('tx')
 WHERE (new->>'id')::int BETWEEN 100 AND 999
    OR new->>'v' LIKE 'rolled back%' OR new->>'v' = 'aborted';
-- The bulk transaction: 5000 inserts, then 5000 deletes, in order.
SELECT op, count(*), min((coalesce(new, old)->>'id')::int), max((coalesce(new, old)->>'id')::int),
       min(seq), max(seq)
  FROM pgrpl.changes('tx')
 WHERE (coalesce(new, old)->>'id')::int >= 1000
 GROUP BY commit_lsn, op ORDER BY commit_lsn;

-- ... each in the order the rows were written.
SELECT op, bool_and((coalesce(new, old)->>'id')::int = 999 + seq) AS in_order
  FROM pgrpl.changes('tx')
 WHERE (coalesce(new, old)->>'id')::int >= 1000
 GROUP BY commit_lsn, op ORDER BY commit_lsn;

SELECT name, state, transactions, changes, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('tx');
DROP PUBLICATION tx_pub;
DROP TABLE tx_a, tx_b, tx_unpublished;
