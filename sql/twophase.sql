--
-- twophase: prepared transactions decoded at PREPARE (protocol 3).
--
-- A prepared transaction is written at PREPARE, invisible (state 'p'),
-- and becomes visible at COMMIT PREPARED, in commit order; ROLLBACK
-- PREPARED removes it.  test/regress.conf allows two prepared
-- transactions at a time, and streams large transactions (64kB).
--
\set VERBOSITY terse

CREATE TABLE tp_t (id int PRIMARY KEY, v text);
CREATE TABLE tp_other (id int);
CREATE PUBLICATION tp_pub FOR TABLE tp_t;
SELECT pgrpl.create_subscription('tp', public.loopback_conninfo(), ARRAY['tp_pub'],
                                 two_phase => true, copy_data => false) IS NOT NULL AS created;
SELECT streaming, two_phase FROM pgrpl.subscriptions WHERE name = 'tp';
SELECT public.wait_sub('tp');
-- Protocol 3 or later; the walsender turned two_phase on for the slot.
SELECT proto_version >= 3 AS two_phase_protocol FROM pgrpl.stat_subscription WHERE name = 'tp';
SELECT two_phase FROM pg_replication_slots WHERE slot_name = 'tp';

-- PREPARE: in transactions() as prepared, not in changes().
INSERT INTO tp_t VALUES (1, 'before');
BEGIN;
INSERT INTO tp_t VALUES (2, 'prepared'), (3, 'prepared');
UPDATE tp_t SET v = 'in the prepared one' WHERE id = 1;
PREPARE TRANSACTION 'tp_one';
SELECT public.wait_sub('tp');
SELECT state, gid, changes, commit_lsn IS NULL AS no_commit_lsn,
       commit_time IS NULL AS no_commit_time, prepare_time IS NOT NULL AS prepare_time
  FROM pgrpl.transactions('tp');
SELECT * FROM public.captured('tp');
SELECT r FROM pgrpl.table_as_of('tp', 'public.tp_t') r ORDER BY r->>'id';

-- COMMIT PREPARED: visible, in commit order (after what committed while
-- it was prepared).
INSERT INTO tp_t VALUES (4, 'while prepared');
COMMIT PREPARED 'tp_one';
SELECT public.wait_sub('tp');
SELECT state, gid, changes, prepare_time IS NOT NULL AS prepare_time
  FROM pgrpl.transactions('tp');
SELECT * FROM public.captured('tp');
SELECT r FROM pgrpl.table_as_of('tp', 'public.tp_t') r ORDER BY r->>'id';

-- ROLLBACK PREPARED: nothing stays; its row says 'a'.
BEGIN;
INSERT INTO tp_t VALUES (5, 'rolled back');
DELETE FROM tp_t WHERE id = 4;
PREPARE TRANSACTION 'tp_two';
SELECT public.wait_sub('tp');
SELECT state, gid, changes FROM pgrpl.transactions('tp') WHERE state = 'prepared';
ROLLBACK PREPARED 'tp_two';
SELECT public.wait_sub('tp');
SELECT count(*) AS prepared FROM pgrpl.transactions('tp') WHERE state = 'prepared';
SELECT t.state, count(c.*) AS rows_left
  FROM pgrpl.transaction t
  JOIN pgrpl.subscription s ON s.sub_id = t.sub_id AND s.sub_name = 'tp'
  LEFT JOIN pgrpl.change c ON c.sub_id = t.sub_id AND c.txn_id = t.txn_id
 WHERE t.gid = 'tp_two'
 GROUP BY t.state;
SELECT count(*) AS visible_rolled_back FROM pgrpl.changes('tp')
 WHERE new->>'id' = '5' OR op = 'DELETE';

-- A prepared transaction with nothing published: no row at PREPARE, and
-- its COMMIT PREPARED finds none (an empty unit).
BEGIN;
INSERT INTO tp_other VALUES (1);
PREPARE TRANSACTION 'tp_empty';
COMMIT PREPARED 'tp_empty';
INSERT INTO tp_t VALUES (6, 'after the empty one');
SELECT public.wait_sub('tp');
SELECT count(*) AS empty_rows FROM pgrpl.transaction t
 WHERE t.gid = 'tp_empty';
SELECT count(*) AS transactions FROM pgrpl.transactions('tp');

-- A large prepared transaction is streamed (STREAM PREPARE), then
-- committed; a large one rolled back leaves nothing.
SELECT streamed_transactions AS streamed_before FROM pgrpl.stat_subscription WHERE name = 'tp' \gset
BEGIN;
INSERT INTO tp_t SELECT g, repeat('s', 100) FROM generate_series(1001, 4000) g;
PREPARE TRANSACTION 'tp_big';
BEGIN;
INSERT INTO tp_t SELECT g, repeat('r', 100) FROM generate_series(5001, 8000) g;
PREPARE TRANSACTION 'tp_big_rollback';
SELECT public.wait_sub('tp');
SELECT streamed_transactions >= :streamed_before + 2 AS were_streamed
  FROM pgrpl.stat_subscription WHERE name = 'tp';
SELECT state, gid, changes FROM pgrpl.transactions('tp') WHERE state = 'prepared';
SELECT count(*) AS visible_before_commit FROM pgrpl.changes('tp') WHERE (new->>'id')::int > 1000;
-- A purge keeps the prepared transactions' rows.
SELECT pgrpl.purge('tp', pg_current_wal_lsn()) >= 0 AS purged;
COMMIT PREPARED 'tp_big';
ROLLBACK PREPARED 'tp_big_rollback';
SELECT public.wait_sub('tp');
SELECT state, gid, changes FROM pgrpl.transactions('tp');
SELECT count(*) AS committed_big, min(seq), max(seq)
  FROM pgrpl.changes('tp') WHERE (new->>'id')::int BETWEEN 1001 AND 4000;
SELECT count(*) AS visible_rolled_back FROM pgrpl.changes('tp') WHERE (new->>'id')::int > 5000;
SELECT t.state, count(c.*) AS rows_left
  FROM pgrpl.transaction t
  JOIN pgrpl.subscription s ON s.sub_id = t.sub_id AND s.sub_name = 'tp'
  LEFT JOIN pgrpl.change c ON c.sub_id = t.sub_id AND c.txn_id = t.txn_id
 WHERE t.gid LIKE 'tp_big%'
 GROUP BY t.state ORDER BY 1;
-- (The purge forgot the rows not changed since: ids up to 1000.)
SELECT count(*) AS differences FROM (
    (SELECT to_jsonb(t) FROM tp_t t WHERE t.id > 1000
     EXCEPT ALL SELECT r FROM pgrpl.table_as_of('tp', 'public.tp_t') r)
    UNION ALL
    (SELECT r FROM pgrpl.table_as_of('tp', 'public.tp_t') r
     EXCEPT ALL SELECT to_jsonb(t) FROM tp_t t)) d;

-- The messages themselves, from a slot that decodes at PREPARE: decode()
-- describes them, capture_preview() shows what they become.
SELECT 'init' FROM pg_create_logical_replication_slot('tp_slot', 'pgoutput', false, true);
BEGIN;
INSERT INTO tp_t VALUES (7, 'seven');
PREPARE TRANSACTION 'tp_msg_one';
BEGIN;
INSERT INTO tp_t VALUES (8, 'eight');
PREPARE TRANSACTION 'tp_msg_two';
COMMIT PREPARED 'tp_msg_one';
ROLLBACK PREPARED 'tp_msg_two';
CREATE TEMP TABLE tp_msgs AS
SELECT m.lsn, m.data, m.ord
  FROM pg_logical_slot_peek_binary_changes('tp_slot', NULL, NULL,
         'proto_version', '3', 'publication_names', 'tp_pub', 'two_phase', 'on')
       WITH ORDINALITY AS m(lsn, xid, data, ord);
SELECT ord, chr(get_byte(data, 0)) AS type, pgrpl.decode(data) ->> 'type' AS name,
       pgrpl.decode(data) ->> 'gid' AS gid
  FROM tp_msgs ORDER BY ord;
SELECT chr(get_byte(data, 0)) AS type, array_agg(DISTINCT k ORDER BY k) AS keys
  FROM tp_msgs, jsonb_object_keys(pgrpl.decode(data)) k
 WHERE chr(get_byte(data, 0)) IN ('b', 'P', 'K', 'r')
 GROUP BY 1 ORDER BY 1;
SELECT row->>'kind' AS kind, row->>'state' AS state, row->>'gid' AS gid,
       row->>'changes' AS changes
  FROM pgrpl.capture_preview((SELECT array_agg(data ORDER BY ord) FROM tp_msgs),
                             (SELECT array_agg(lsn ORDER BY ord) FROM tp_msgs))
       WITH ORDINALITY AS r(row, ord)
 WHERE row->>'kind' <> 'change' ORDER BY ord;
-- Malformed: a PREPARE without BEGIN PREPARE, a gid without its NUL, a
-- gid of 200 bytes, trailing bytes.
SELECT pgrpl.capture_preview(ARRAY[(SELECT data FROM tp_msgs WHERE get_byte(data, 0) = ascii('P') LIMIT 1)]);
SELECT pgrpl.decode(substring(data FROM 1 FOR length(data) - 1))
  FROM tp_msgs WHERE get_byte(data, 0) = ascii('K');
SELECT pgrpl.decode(substring(data FROM 1 FOR 30) || convert_to(repeat('g', 200), 'UTF8') || '\x00'::bytea)
  FROM tp_msgs WHERE get_byte(data, 0) = ascii('K');
SELECT pgrpl.decode(data || '\x00'::bytea) FROM tp_msgs WHERE get_byte(data, 0) = ascii('r');
SELECT pg_drop_replication_slot('tp_slot');

SELECT pgrpl.drop_subscription('tp');
DROP PUBLICATION tp_pub;
DROP TABLE tp_t, tp_other;
