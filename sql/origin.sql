--
-- origin: origin => 'none' captures only the transactions that have no
-- replication origin on the primary, i.e. not those another replication
-- applied there (two-way setups).  A PostgreSQL 16+ primary filters them
-- itself (pgoutput's origin 'none'); from older ones pgrpl drops every
-- transaction whose ORIGIN message says it has one, streamed ones too.
--
\set VERBOSITY terse

CREATE TABLE og_t (id int PRIMARY KEY, v text);
CREATE PUBLICATION og_pub FOR TABLE og_t;
SELECT pgrpl.create_subscription('og_any', public.loopback_conninfo(), ARRAY['og_pub'], copy_data => false) IS NOT NULL AS created;
SELECT pgrpl.create_subscription('og_none', public.loopback_conninfo(), ARRAY['og_pub'],
                                 origin => 'NONE', copy_data => false) IS NOT NULL AS created;
SELECT name, origin, failover FROM pgrpl.subscriptions WHERE name LIKE 'og%' ORDER BY name;

-- Only 'any' and 'none' (any case), as CREATE SUBSCRIPTION's origin.
SELECT pgrpl.create_subscription('og_bad', public.loopback_conninfo(), ARRAY['og_pub'], origin => 'local', copy_data => false);
SELECT pgrpl.alter_subscription('og_any', origin => 'pg_1');
SELECT pgrpl.alter_subscription('og_any', origin => NULL);
SELECT name, origin FROM pgrpl.subscriptions WHERE name LIKE 'og%' ORDER BY name;

INSERT INTO og_t VALUES (1, 'local');
-- What another replication applies here carries its origin: this session
-- plays that replication.
SELECT pg_replication_origin_create('regress_elsewhere') IS NOT NULL AS origin_created;
SELECT pg_replication_origin_session_setup('regress_elsewhere');
INSERT INTO og_t VALUES (2, 'from elsewhere');
-- Larger than logical_decoding_work_mem: streamed, its origin in its first
-- stream block only.
INSERT INTO og_t SELECT g, 'streamed from elsewhere' FROM generate_series(100, 3099) g;
SELECT pg_replication_origin_session_reset();
INSERT INTO og_t VALUES (3, 'local again');
SELECT public.wait_sub('og_any') AND public.wait_sub('og_none') AS caught_up;

SELECT s.name, t.origin, t.changes
  FROM (VALUES ('og_any'), ('og_none')) s(name),
       LATERAL pgrpl.transactions(s.name) t
 ORDER BY s.name, t.commit_lsn;
SELECT op, new->>'id' AS id, new->>'v' AS v FROM pgrpl.changes('og_none') ORDER BY commit_lsn, seq;

SELECT streamed_transactions >= 1 AS streamed FROM pgrpl.stat_subscription WHERE name = 'og_any';

-- Changed by alter_subscription (here while disabled, so that no change
-- below can reach the worker's session from before).
SELECT pgrpl.disable_subscription('og_any');
SELECT public.wait_stopped('og_any');
SELECT pgrpl.alter_subscription('og_any', origin => 'none');
SELECT pgrpl.enable_subscription('og_any');
SELECT pg_replication_origin_session_setup('regress_elsewhere');
UPDATE og_t SET v = 'changed elsewhere' WHERE id = 1;
SELECT pg_replication_origin_session_reset();
UPDATE og_t SET v = 'changed here' WHERE id = 3;
SELECT public.wait_sub('og_any') AS caught_up;
SELECT op, new->>'id' AS id, new->>'v' AS v
  FROM pgrpl.changes('og_any') WHERE op = 'UPDATE' ORDER BY commit_lsn, seq;
SELECT name, origin, last_error FROM pgrpl.stat_subscription s JOIN pgrpl.subscriptions USING (name)
 WHERE name LIKE 'og%' ORDER BY name;

SELECT pgrpl.drop_subscription('og_any');
SELECT pgrpl.drop_subscription('og_none');
SELECT pg_replication_origin_drop('regress_elsewhere');
DROP PUBLICATION og_pub;
DROP TABLE og_t;
