--
-- xact: what the management functions do to the worker follows the
-- transaction that called them, subtransactions included: a rolled-back
-- savepoint or exception block leaves the worker as it was, a released
-- savepoint takes effect when the transaction commits.  Such a transaction
-- cannot be prepared.
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

UPDATE xact_worker SET pid = (SELECT pid FROM pgrpl.stat_subscription WHERE name = 'xact');

-- 9: a transaction that has asked for a worker change cannot be prepared
-- (its changes are made at commit, by this session): PREPARE TRANSACTION
-- fails and the transaction is rolled back.
SELECT pgrpl.create_subscription('xact_off', public.loopback_conninfo(), ARRAY['xact_pub'],
                                 enabled => false, copy_data => false) IS NOT NULL AS created;
BEGIN;
SELECT pgrpl.disable_subscription('xact');
PREPARE TRANSACTION 'xact_disable';
BEGIN;
SELECT pgrpl.alter_subscription('xact', publications => ARRAY['xact_pub', 'xact_other']);
PREPARE TRANSACTION 'xact_alter';
BEGIN;
SELECT pgrpl.set_stop_lsn('xact', '0/1');
PREPARE TRANSACTION 'xact_stop_lsn';
BEGIN;
SELECT pgrpl.enable_subscription('xact_off');
PREPARE TRANSACTION 'xact_enable';
BEGIN;
SELECT pgrpl.create_subscription('xact_new', public.loopback_conninfo(), ARRAY['xact_pub'],
                                 slot_name => 'xact_off', create_slot => false, copy_data => false) IS NOT NULL AS created;
PREPARE TRANSACTION 'xact_create';
SELECT count(*) AS prepared FROM pg_prepared_xacts;
SELECT name, enabled, publications, stop_lsn FROM pgrpl.subscriptions ORDER BY name;
SELECT name, state FROM pgrpl.stat_subscription ORDER BY name;
SELECT count(*) AS slots FROM pgrpl.worker_status();
INSERT INTO xact_t VALUES (8, 'after refused prepares');
SELECT public.wait_sub('xact');
SELECT * FROM xact_same_worker();
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '8';

-- The worker stopped by drop_subscription is back after the failed PREPARE.
SELECT xact_slot_confirmed();
BEGIN;
SELECT pgrpl.drop_subscription('xact', drop_slot => false);
PREPARE TRANSACTION 'xact_drop';
SELECT count(*) AS prepared FROM pg_prepared_xacts;
SELECT name, enabled FROM pgrpl.subscriptions ORDER BY name;
INSERT INTO xact_t VALUES (9, 'after refused prepare of a drop');
SELECT public.wait_sub('xact');
SELECT name, state FROM pgrpl.stat_subscription ORDER BY name;
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '9';
UPDATE xact_worker SET pid = (SELECT pid FROM pgrpl.stat_subscription WHERE name = 'xact');

-- A call rolled back to a savepoint leaves nothing to do: PREPARE works,
-- and the worker runs on.
BEGIN;
SAVEPOINT s;
SELECT pgrpl.disable_subscription('xact');
ROLLBACK TO SAVEPOINT s;
PREPARE TRANSACTION 'xact_nothing';
SELECT gid FROM pg_prepared_xacts;
COMMIT PREPARED 'xact_nothing';
SELECT name, enabled FROM pgrpl.subscriptions ORDER BY name;
INSERT INTO xact_t VALUES (10, 'after a prepared transaction');
SELECT public.wait_sub('xact');
SELECT * FROM xact_same_worker();
SELECT new->>'note' AS note FROM pgrpl.changes('xact') WHERE new->>'id' = '10';

-- Everything was captured once, in order.
SELECT txn, seq, op, new FROM public.captured('xact');

SELECT pgrpl.drop_subscription('xact_off');
SELECT pgrpl.drop_subscription('xact');
DROP FUNCTION xact_same_worker(), xact_slots(), xact_slot_confirmed();
DROP PUBLICATION xact_pub;
DROP TABLE xact_t;
