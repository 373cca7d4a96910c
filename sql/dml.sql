--
-- dml: INSERT, UPDATE and DELETE are captured in order; the subscription
-- API (disable, enable, alter, set_stop_lsn) and the views; a FOR ALL
-- TABLES publication on the loopback never captures pgrpl's own writes.
--
\set VERBOSITY terse

CREATE TABLE dml_t (id int PRIMARY KEY, val text, n numeric);
CREATE TABLE dml_other (id int PRIMARY KEY, note text);
CREATE TABLE dml_unpublished (id int PRIMARY KEY);
CREATE PUBLICATION dml_pub FOR TABLE dml_t;
CREATE PUBLICATION dml_pub2 FOR TABLE dml_other;

-- The subscription's conninfo holds a password (trust auth ignores it).
SELECT pgrpl.create_subscription('dml', public.loopback_conninfo() || ' password=secret',
                                 ARRAY['dml_pub'], copy_data => false) IS NOT NULL AS created;

SELECT name, enabled, slot_name, publications, stop_lsn,
       conninfo LIKE '%password=********%' AS password_masked,
       conninfo NOT LIKE '%secret%' AS no_secret
  FROM pgrpl.subscriptions;
-- The masking itself: keyword=value and URI forms; unparsable is NULL.
SELECT pgrpl.mask_conninfo('host=h port=5432 password=secret dbname=d') AS kv;
SELECT pgrpl.mask_conninfo('postgresql://u:secret@h:5433/d?sslmode=disable') AS uri;
SELECT pgrpl.mask_conninfo($$password='it\'s \\ secret' user='o\'neil'$$) AS quoted;
SELECT pgrpl.mask_conninfo('password=secret nosuchkeyword') IS NULL AS unparsable;
-- The replication slot exists on the primary (this server), for pgoutput.
SELECT slot_name, plugin, slot_type, database = current_database() AS this_db
  FROM pg_replication_slots;

INSERT INTO dml_t VALUES (1, 'one', 1.5), (2, 'two', NULL);
INSERT INTO dml_t VALUES (3, 'three', 3);
UPDATE dml_t SET val = 'uno' WHERE id = 1;
UPDATE dml_t SET n = n * 2;
DELETE FROM dml_t WHERE id = 2;
-- Tables outside the publication are not captured.
INSERT INTO dml_unpublished VALUES (1);
SELECT public.wait_sub('dml');

SELECT * FROM public.captured('dml');
SELECT name, state, transactions, changes, last_error FROM pgrpl.stat_subscription;
-- One transaction row per captured transaction, with its change count.
SELECT dense_rank() OVER (ORDER BY commit_lsn) AS txn, changes,
       xid IS NOT NULL AS has_xid, end_lsn > commit_lsn AS end_after_commit,
       origin
  FROM pgrpl.transaction ORDER BY commit_lsn;

-- disable: the worker stops; changes made meanwhile stay in the slot.
SELECT pgrpl.disable_subscription('dml');
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT name, state FROM pgrpl.stat_subscription;
SELECT public.wait_stopped('dml');
SELECT name, state, pid, transactions, changes FROM pgrpl.stat_subscription;
INSERT INTO dml_t VALUES (4, 'while disabled', 4);
-- alter while disabled: a second publication, the same server.
SELECT pgrpl.alter_subscription('dml', publications => ARRAY['dml_pub', 'dml_pub2']);
SELECT pgrpl.alter_subscription('dml', conninfo => public.loopback_conninfo() || ' password=other');
SELECT name, enabled, publications,
       conninfo LIKE '%password=********%' AS password_masked,
       conninfo NOT LIKE '%other%' AS no_secret
  FROM pgrpl.subscriptions;
INSERT INTO dml_other VALUES (1, 'in dml_pub2');
SELECT pgrpl.enable_subscription('dml');
SELECT public.wait_sub('dml');
SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT op, table_name, old, new FROM pgrpl.changes('dml')
 WHERE new->>'id' IN ('4') OR table_name = 'dml_other' ORDER BY commit_lsn, seq;

-- enabling an enabled subscription and disabling twice are no-ops.
SELECT pgrpl.enable_subscription('dml');
SELECT pgrpl.disable_subscription('dml');
SELECT pgrpl.disable_subscription('dml');
SELECT name, enabled FROM pgrpl.subscriptions;
SELECT pgrpl.enable_subscription('dml');

-- set_stop_lsn: the worker captures up to the stop LSN, then finishes.
-- (Set while disabled: a running worker applies a new stop_lsn only when
-- it next reconnects.)
SELECT pgrpl.disable_subscription('dml');
SELECT public.wait_stopped('dml');
INSERT INTO dml_t VALUES (41, 'before stop_lsn', 41);
SELECT pgrpl.set_stop_lsn('dml', pg_current_wal_lsn());
SELECT stop_lsn IS NOT NULL AS has_stop_lsn FROM pgrpl.subscriptions;
INSERT INTO dml_t VALUES (5, 'after stop_lsn', 5);
SELECT pgrpl.enable_subscription('dml');
-- Waiting past the stop LSN returns false once the worker has finished.
SELECT public.wait_sub('dml');
SELECT name, state, pid IS NULL AS no_pid FROM pgrpl.stat_subscription;
SELECT count(*) FILTER (WHERE new->>'id' = '41') AS before_stop,
       count(*) FILTER (WHERE new->>'id' = '5') AS after_stop
  FROM pgrpl.changes('dml');
-- Clearing it resumes capture where it stopped.
SELECT pgrpl.set_stop_lsn('dml', NULL);
SELECT stop_lsn IS NULL AS no_stop_lsn FROM pgrpl.subscriptions;
SELECT public.wait_sub('dml');
SELECT name, state FROM pgrpl.stat_subscription;
SELECT op, table_name, new FROM pgrpl.changes('dml') WHERE new->>'id' = '5';

-- A FOR ALL TABLES publication on the loopback: a second subscription
-- captures the user tables only, never the pgrpl.change / transaction rows
-- that its own worker and the worker of "dml" write, nor its own
-- pgrpl.subscription row (inserted after its slot was created).
CREATE PUBLICATION dml_all FOR ALL TABLES;
SELECT public.create_sub('dml_all', ARRAY['dml_all']);
INSERT INTO dml_t VALUES (6, 'both', 6);
UPDATE dml_other SET note = 'both too' WHERE id = 1;
INSERT INTO dml_unpublished VALUES (2);
SELECT public.wait_sub('dml');
SELECT public.wait_sub('dml_all');
-- "dml" wrote rows for two of the changes while "dml_all" was streaming.
SELECT op, table_name, new FROM pgrpl.changes('dml')
 WHERE new->>'id' = '6' OR new->>'note' = 'both too' ORDER BY commit_lsn, seq;
SELECT * FROM public.captured('dml_all');
SELECT count(*) AS own_rows FROM pgrpl.changes('dml_all') WHERE schema_name = 'pgrpl';
SELECT name, state FROM pgrpl.stat_subscription ORDER BY name;

SELECT pgrpl.drop_subscription('dml_all');
SELECT pgrpl.drop_subscription('dml');
SELECT count(*) AS subscriptions FROM pgrpl.subscriptions;
SELECT count(*) AS slots FROM pg_replication_slots;
-- The captured rows went with the subscriptions.
SELECT count(*) AS changes FROM pgrpl.change;
SELECT count(*) AS transactions FROM pgrpl.transaction;

DROP PUBLICATION dml_pub, dml_pub2, dml_all;
DROP TABLE dml_t, dml_other, dml_unpublished;
