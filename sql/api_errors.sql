--
-- api_errors: every error case of the SQL API.
--
\set VERBOSITY terse

CREATE TABLE api_t (id int PRIMARY KEY);
CREATE PUBLICATION api_pub FOR TABLE api_t;
CREATE PUBLICATION api_pub2 FOR TABLE api_t;

-- ---- connection strings ----------------------------------------------------

-- Not a connection string at all.
SELECT pgrpl.create_subscription('api_bad', 'this is not a conninfo', ARRAY['api_pub'], copy_data => false);
-- Unknown keyword, unterminated quote, bad URI.
SELECT pgrpl.create_subscription('api_bad', 'nosuchkeyword=1', ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.create_subscription('api_bad', 'host=''unterminated', ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.create_subscription('api_bad', 'postgresql://[::1', ARRAY['api_pub'], copy_data => false);
-- A parse error never quotes a connection string that holds a password.
SELECT pgrpl.create_subscription('api_bad', 'password=secret nosuchkeyword', ARRAY['api_pub'], copy_data => false);
-- Nothing listens there (08006: connection_failure; libpq's own wording of
-- the reason varies between its versions).
\set VERBOSITY sqlstate
SELECT pgrpl.create_subscription('api_bad', 'host=/nonexistent port=1 connect_timeout=5',
                                 ARRAY['api_pub'], copy_data => false);
\set VERBOSITY terse
-- None of these created anything.
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;

-- ---- publications ----------------------------------------------------------

-- The error names every missing publication, in the order given.
SELECT public.create_sub('api_bad', ARRAY['api_missing']);
SELECT public.create_sub('api_bad', ARRAY['api_pub', 'api_missing', 'Api Missing 2']);
-- Empty array, NULL element, empty name, duplicate name, 2-D array.
SELECT public.create_sub('api_bad', ARRAY[]::text[]);
SELECT public.create_sub('api_bad', ARRAY['api_pub', NULL]);
SELECT public.create_sub('api_bad', ARRAY['']);
SELECT public.create_sub('api_bad', ARRAY['api_pub', 'api_pub']);
SELECT public.create_sub('api_bad', ARRAY[['api_pub'], ['api_pub2']]);
-- Nothing was created by any of the failures above, and every connection
-- made to the primary was closed again.
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;
SELECT public.wait_no_walsender('api_bad');

-- ---- NULL arguments -------------------------------------------------------

SELECT pgrpl.create_subscription(NULL, public.loopback_conninfo(), ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.create_subscription('api_bad', NULL, ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.create_subscription('api_bad', public.loopback_conninfo(), NULL, copy_data => false);
SELECT pgrpl.drop_subscription(NULL);
SELECT pgrpl.enable_subscription(NULL);
SELECT pgrpl.disable_subscription(NULL);
SELECT pgrpl.alter_subscription(NULL);
SELECT pgrpl.set_stop_lsn(NULL, '0/0');
SELECT pgrpl.wait_for_lsn(NULL, '0/0');
-- pgrpl.changes: a NULL subscription is an error.
SELECT count(*) AS changes FROM pgrpl.changes(NULL);

-- ---- names ------------------------------------------------------------------

SELECT public.create_sub('', ARRAY['api_pub']);
SELECT public.create_sub(repeat('x', 64), ARRAY['api_pub']);
-- The slot name defaults to the subscription name, which must then be a
-- valid replication slot name.
SELECT public.create_sub('Api Sub', ARRAY['api_pub']);
SELECT pgrpl.create_subscription('api_bad', public.loopback_conninfo(), ARRAY['api_pub'],
                                 slot_name => 'bad-slot', copy_data => false);
SELECT pgrpl.create_subscription('api_bad', public.loopback_conninfo(), ARRAY['api_pub'],
                                 slot_name => '', copy_data => false);

-- ---- unknown subscription ---------------------------------------------------

SELECT pgrpl.drop_subscription('api_nosuch');
SELECT pgrpl.enable_subscription('api_nosuch');
SELECT pgrpl.disable_subscription('api_nosuch');
SELECT pgrpl.alter_subscription('api_nosuch', publications => ARRAY['api_pub']);
SELECT pgrpl.set_stop_lsn('api_nosuch', NULL);
SELECT pgrpl.wait_for_lsn('api_nosuch', '0/0');
-- pgrpl.changes of an unknown subscription is an error.
SELECT count(*) AS changes FROM pgrpl.changes('api_nosuch');

-- ---- a subscription, and errors about it -------------------------------------

SELECT public.create_sub('api_sub', ARRAY['api_pub']);
-- Duplicate name (checked before anything is done on the primary).
SELECT public.create_sub('api_sub', ARRAY['api_pub']);
SELECT pgrpl.create_subscription('api_sub', 'host=/nonexistent', ARRAY['api_pub'],
                                 slot_name => 'other_slot', copy_data => false);
-- Its slot name is taken on the primary.
SELECT pgrpl.create_subscription('api_other', public.loopback_conninfo(), ARRAY['api_pub'],
                                 slot_name => 'api_sub', copy_data => false);
-- alter: bad conninfo syntax, bad publication list; nothing changes.
SELECT pgrpl.alter_subscription('api_sub', conninfo => 'this is not a conninfo');
SELECT pgrpl.alter_subscription('api_sub', publications => ARRAY[]::text[]);
SELECT pgrpl.alter_subscription('api_sub', publications => ARRAY['api_pub', NULL]);
-- alter with only NULLs changes nothing.
SELECT pgrpl.alter_subscription('api_sub');
SELECT name, enabled, slot_name, publications FROM pgrpl.subscriptions;
-- wait_for_lsn: NULL target, negative timeout; a zero timeout just answers.
SELECT pgrpl.wait_for_lsn('api_sub', NULL);
SELECT pgrpl.wait_for_lsn('api_sub', '0/0', '-1 second');
SELECT pgrpl.wait_for_lsn('api_sub', 'FFFFFFFF/FFFFFFFF', '0');
-- The subscription still works (the alter above restarted its worker).
INSERT INTO api_t VALUES (0);
SELECT public.wait_sub('api_sub');
SELECT * FROM public.captured('api_sub');
SELECT pgrpl.drop_subscription('api_sub');
SELECT pgrpl.drop_subscription('api_sub');

-- ---- existing and missing slots ---------------------------------------------

SELECT 'init' AS slot FROM pg_create_logical_replication_slot('api_existing', 'pgoutput');
-- create_slot => true (the default) refuses to take over an existing slot.
SELECT pgrpl.create_subscription('api_existing', public.loopback_conninfo(), ARRAY['api_pub'], copy_data => false);
-- create_slot => false needs the slot to exist.
SELECT pgrpl.create_subscription('api_missing_slot', public.loopback_conninfo(),
                                 ARRAY['api_pub'], create_slot => false, copy_data => false);
-- A physical slot, or one of another plugin, is refused.
SELECT 'init' AS slot FROM pg_create_physical_replication_slot('api_physical');
SELECT pgrpl.create_subscription('api_physical', public.loopback_conninfo(),
                                 ARRAY['api_pub'], create_slot => false, copy_data => false);
SELECT pg_drop_replication_slot('api_physical');
SELECT 'init' AS slot FROM pg_create_logical_replication_slot('api_decoding', 'test_decoding');
SELECT pgrpl.create_subscription('api_decoding', public.loopback_conninfo(),
                                 ARRAY['api_pub'], create_slot => false, copy_data => false);
SELECT pg_drop_replication_slot('api_decoding');
SELECT public.wait_no_walsender('api_existing') AND public.wait_no_walsender('api_missing_slot')
       AND public.wait_no_walsender('api_physical')
       AND public.wait_no_walsender('api_decoding') AS connections_closed;
-- create_slot => false adopts the existing slot and starts at its position.
SELECT pgrpl.create_subscription('api_existing', public.loopback_conninfo(), ARRAY['api_pub'],
                                 create_slot => false, copy_data => false)
       = (SELECT confirmed_flush_lsn FROM pg_replication_slots
           WHERE slot_name = 'api_existing') AS starts_at_slot;
INSERT INTO api_t VALUES (1);
SELECT public.wait_sub('api_existing');
SELECT * FROM public.captured('api_existing');
-- drop_subscription(drop_slot => false) keeps the slot.
SELECT pgrpl.drop_subscription('api_existing', drop_slot => false);
SELECT slot_name FROM pg_replication_slots;
-- (The walsender of the stopped worker may still hold the slot briefly.)
SELECT public.wait_no_walsender('api_existing');
SELECT pg_drop_replication_slot('api_existing');

-- ---- transactions ---------------------------------------------------------

-- Creating or dropping a slot cannot be rolled back: not in a transaction
-- block (as CREATE / DROP SUBSCRIPTION).
BEGIN;
SELECT public.create_sub('api_in_xact', ARRAY['api_pub']);
ROLLBACK;
SELECT public.create_sub('api_in_xact', ARRAY['api_pub']);
BEGIN;
SELECT pgrpl.drop_subscription('api_in_xact');
ROLLBACK;
-- Without creating or dropping the slot, both are transactional.
BEGIN;
SELECT pgrpl.drop_subscription('api_in_xact', drop_slot => false);
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
ROLLBACK;
-- (The worker, stopped by the drop, is back.)
SELECT public.wait_sub('api_in_xact');
SELECT name, state FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('api_in_xact', drop_slot => false);
BEGIN;
SELECT pgrpl.create_subscription('api_in_xact', public.loopback_conninfo(), ARRAY['api_pub'],
                                 create_slot => false, copy_data => false) IS NOT NULL AS created;
SELECT name FROM pgrpl.subscriptions;
ROLLBACK;
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT slot_name FROM pg_replication_slots;
SELECT public.wait_no_walsender('api_in_xact');
SELECT pg_drop_replication_slot('api_in_xact');
-- On a loopback primary, creating a slot waits for every transaction that
-- has written -- which must not be the caller's own.
WITH w AS (INSERT INTO api_t VALUES (2) RETURNING id)
SELECT public.create_sub('api_in_xact', ARRAY['api_pub']) FROM w;
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;
SELECT public.wait_no_walsender('api_in_xact');

-- A failure after the slot was created drops the slot again: otherwise the
-- primary keeps WAL for a slot nobody reads, and a retry is told it exists.
CREATE FUNCTION public.api_refuse() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;
CREATE TRIGGER api_refuse BEFORE INSERT ON pgrpl.subscription
    FOR EACH ROW EXECUTE FUNCTION public.api_refuse();
SELECT public.create_sub('api_undo', ARRAY['api_pub']);
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name = 'api_undo';
SELECT count(*) AS subscriptions FROM pgrpl.subscription WHERE sub_name = 'api_undo';
DROP TRIGGER api_refuse ON pgrpl.subscription;
DROP FUNCTION public.api_refuse();
-- The retry creates it.
SELECT public.create_sub('api_undo', ARRAY['api_pub']);
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name = 'api_undo';
SELECT pgrpl.drop_subscription('api_undo');
SELECT public.wait_no_walsender('api_undo');

-- ---- a disabled subscription -------------------------------------------------

SELECT pgrpl.create_subscription('api_disabled', public.loopback_conninfo(), ARRAY['api_pub'],
                                 enabled => false, copy_data => false) IS NOT NULL AS created;
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT name, state, pid FROM pgrpl.stat_subscription;
-- No worker: waiting says so at once, whatever the timeout.
SELECT pgrpl.wait_for_lsn('api_disabled', pg_current_wal_lsn(), '1 hour') AS reached,
       clock_timestamp() - statement_timestamp() < interval '30 s' AS at_once;

-- ---- not a superuser --------------------------------------------------------

CREATE ROLE regress_pgrpl_user;
SET ROLE regress_pgrpl_user;
-- Without any grant the schema itself is closed.
SELECT pgrpl.create_subscription('api_user', 'dbname=postgres', ARRAY['api_pub'], copy_data => false);
SELECT count(*) FROM pgrpl.changes('api_disabled');
SELECT * FROM pgrpl.subscriptions;
RESET ROLE;
GRANT USAGE ON SCHEMA pgrpl TO regress_pgrpl_user;
SET ROLE regress_pgrpl_user;
-- With USAGE on the schema: no EXECUTE on the functions, no SELECT on the
-- tables and views.
SELECT pgrpl.create_subscription('api_user', 'dbname=postgres', ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.drop_subscription('api_disabled');
SELECT pgrpl.alter_subscription('api_disabled', publications => ARRAY['api_pub2']);
SELECT pgrpl.enable_subscription('api_disabled');
SELECT pgrpl.disable_subscription('api_disabled');
SELECT pgrpl.set_stop_lsn('api_disabled', NULL);
SELECT pgrpl.wait_for_lsn('api_disabled', '0/0');
SELECT count(*) FROM pgrpl.changes('api_disabled');
SELECT count(*) FROM pgrpl.change;
SELECT count(*) FROM pgrpl.transaction;
SELECT count(*) FROM pgrpl.subscription;
SELECT count(*) FROM pgrpl.subscriptions;
SELECT count(*) FROM pgrpl.stat_subscription;
RESET ROLE;
-- Even with EXECUTE granted, the management functions check for a
-- superuser; the read functions (SECURITY DEFINER) then work: that is how
-- a reader role is given access without seeing conninfo.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgrpl TO regress_pgrpl_user;
SET ROLE regress_pgrpl_user;
SELECT pgrpl.create_subscription('api_user', 'dbname=postgres', ARRAY['api_pub'], copy_data => false);
SELECT pgrpl.drop_subscription('api_disabled');
SELECT pgrpl.alter_subscription('api_disabled', publications => ARRAY['api_pub2']);
SELECT pgrpl.enable_subscription('api_disabled');
SELECT pgrpl.disable_subscription('api_disabled');
SELECT pgrpl.set_stop_lsn('api_disabled', NULL);
SELECT pgrpl.wait_for_lsn('api_disabled', '0/0');
SELECT count(*) FROM pgrpl.changes('api_disabled');
RESET ROLE;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrpl FROM regress_pgrpl_user;
REVOKE ALL ON SCHEMA pgrpl FROM regress_pgrpl_user;
DROP ROLE regress_pgrpl_user;
-- The subscription is untouched.
SELECT name, enabled, publications FROM pgrpl.subscriptions;

SELECT pgrpl.drop_subscription('api_disabled');
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;
DROP PUBLICATION api_pub, api_pub2;
DROP TABLE api_t;
