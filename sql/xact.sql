--
-- xact: what the management functions do to the worker follows the
-- transaction that called them, subtransactions included: a rolled-back
-- savepoint or exception block leaves the worker as it was, a released
-- savepoint takes effect when the transaction commits.
--
\set VERBOSITY terse

CREATE TABLE xact_t (id int PRIMARY KEY, note text);
CREATE PUBLICATION xact_pub FOR TABLE xact_t;
SELECT public.create_sub('xact', ARRAY['xact_pub']);
INSERT INTO xact_t VALUES (1, 'first');
SELECT public.wait_sub('xact');
SELECT name, state FROM pgrpl.stat_subscription;

-- The worker's pid: the same pid later means it kept running (it never
-- exits by itself while enabled), not that it was stopped and restarted.
CREATE TEMP TABLE xact_worker AS
SELECT pid FROM pgrpl.stat_subscription WHERE name = 'xact';

-- The worker of "xact" is the one of xact_worker, streaming.
CREATE FUNCTION xact_same_worker() RETURNS TABLE (state text, same_worker boolean)
LANGUAGE sql VOLATILE AS $$
    SELECT s.state, s.pid = w.pid FROM pgrpl.stat_subscription s, xact_worker w
     WHERE s.name = 'xact'
$$;

-- Slots in shared memory for "xact" (the raw worker_status(): a slot is
-- taken at once by the commit that enables a subscription).
CREATE FUNCTION xact_slots() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT count(*) FROM pgrpl.worker_status() w
      JOIN pgrpl.subscription s ON s.sub_id = w.sub_id
     WHERE s.sub_name = 'xact'
$$;

-- drop_subscription drops the subscription's replication origin, and
-- PostgreSQL forgets an origin's progress at once even if the drop is rolled
-- back (DROP SUBSCRIPTION has the same problem).  The worker then resumes at
-- the slot's confirmed position: before such a drop, wait until the slot has
-- confirmed everything captured, so that nothing is sent twice.
CREATE FUNCTION xact_slot_confirmed() RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT public.poll_until(
        'SELECT r.confirmed_flush_lsn >= s.flushed_lsn
           FROM pg_replication_slots r, pgrpl.stat_subscription s
          WHERE r.slot_name = ''xact'' AND s.name = ''xact''')
$$;

-- 1: disable in a savepoint that is rolled back: the worker keeps running.
BEGIN;
SAVEPOINT s;
SELECT pgrpl.disable_subscription('xact');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT name, enabled FROM pgrpl.subscriptions;
INSERT INTO xact_t VALUES (2, 'after rollback to savepoint');
SELECT public.wait_sub('xact');
SELECT * FROM xact_same_worker();
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '2';

-- 2: the same in an exception block of a function.
DO $$
BEGIN
    PERFORM pgrpl.disable_subscription('xact');
    RAISE EXCEPTION 'changed my mind';
EXCEPTION WHEN raise_exception THEN
    RAISE NOTICE 'caught: %', SQLERRM;
END
$$;
SELECT name, enabled FROM pgrpl.subscriptions;
INSERT INTO xact_t VALUES (3, 'after exception block');
SELECT public.wait_sub('xact');
SELECT * FROM xact_same_worker();
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '3';

-- 3: released into a savepoint that is then rolled back: gone with it.
BEGIN;
SAVEPOINT a;
SAVEPOINT b;
SELECT pgrpl.disable_subscription('xact');
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT name, enabled FROM pgrpl.subscriptions;
INSERT INTO xact_t VALUES (4, 'after nested rollback');
SELECT public.wait_sub('xact');
SELECT * FROM xact_same_worker();
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '4';

-- 4: a released savepoint: the worker stops when the transaction commits,
-- not before.
BEGIN;
SAVEPOINT s;
SELECT pgrpl.disable_subscription('xact');
RELEASE SAVEPOINT s;
SELECT * FROM xact_same_worker();
COMMIT;
SELECT public.wait_stopped('xact');
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT name, state, pid FROM pgrpl.stat_subscription;
SELECT xact_slots() AS slots;

-- 5: enable in a savepoint that is rolled back: no slot is taken, no
-- worker starts.
BEGIN;
SAVEPOINT s;
SELECT pgrpl.enable_subscription('xact');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT xact_slots() AS slots;
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT name, state, pid FROM pgrpl.stat_subscription;

-- 6: enable released, then disable rolled back: enabled at commit.
INSERT INTO xact_t VALUES (5, 'while disabled');
BEGIN;
SAVEPOINT s1;
SELECT pgrpl.enable_subscription('xact');
RELEASE SAVEPOINT s1;
SAVEPOINT s2;
SELECT pgrpl.disable_subscription('xact');
ROLLBACK TO SAVEPOINT s2;
COMMIT;
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT public.wait_sub('xact');
SELECT name, state FROM pgrpl.stat_subscription;
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '5';
UPDATE xact_worker SET pid = (SELECT pid FROM pgrpl.stat_subscription WHERE name = 'xact');

-- 7: drop_subscription stops the worker at once (its origin must be free);
-- rolled back to a savepoint, the subscription is back and so is a worker,
-- from the commit on.
SELECT xact_slot_confirmed();
BEGIN;
SAVEPOINT s;
SELECT pgrpl.drop_subscription('xact', drop_slot => false);
SELECT count(*) AS running FROM pgrpl.worker_status() WHERE pid IS NOT NULL;
ROLLBACK TO SAVEPOINT s;
SELECT name, enabled FROM pgrpl.subscriptions;
COMMIT;
INSERT INTO xact_t VALUES (6, 'after dropping was rolled back');
SELECT public.wait_sub('xact');
SELECT name, state FROM pgrpl.stat_subscription;
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '6';

-- 8: disable, then drop, then roll back: the worker that ran before the
-- transaction runs again (though the transaction had disabled it when it
-- dropped it).
SELECT xact_slot_confirmed();
BEGIN;
SELECT pgrpl.disable_subscription('xact');
SELECT pgrpl.drop_subscription('xact', drop_slot => false);
ROLLBACK;
SELECT name, enabled FROM pgrpl.subscriptions;
INSERT INTO xact_t VALUES (7, 'after disable and drop were rolled back');
SELECT public.wait_sub('xact');
SELECT name, state FROM pgrpl.stat_subscription;
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '7';

-- Everything was captured once, in order.
SELECT txn, seq, op, new FROM public.captured('xact');

SELECT pgrpl.drop_subscription('xact');
DROP FUNCTION xact_same_worker(), xact_slots(), xact_slot_confirmed();
DROP PUBLICATION xact_pub;
DROP TABLE xact_t;
