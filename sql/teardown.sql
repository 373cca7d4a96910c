--
-- teardown: every test dropped what it created.
--
\set VERBOSITY terse

-- No subscription, captured row or worker is left.
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS transactions FROM pgrpl.transaction;
SELECT count(*) AS changes FROM pgrpl.change;
SELECT count(*) AS workers FROM pgrpl.worker_status();

-- drop_subscription dropped every replication slot and origin.
SELECT slot_name FROM pg_replication_slots ORDER BY 1;
SELECT roname FROM pg_replication_origin ORDER BY 1;

-- and every test its publications.
SELECT pubname FROM pg_publication ORDER BY 1;
