--
-- messages: pg_logical_emit_message, transactional and not.
--
\set VERBOSITY terse

CREATE TABLE msg_t (id int PRIMARY KEY);
CREATE PUBLICATION msg_pub FOR TABLE msg_t;
SELECT public.create_sub('msg', ARRAY['msg_pub']);

-- Transactional, alone: a transaction of its own.
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_prefix', 'alone');
-- Transactional, between changes: in order, in their transaction.
BEGIN;
INSERT INTO msg_t VALUES (1);
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_prefix', 'between');
INSERT INTO msg_t VALUES (2);
-- Non-transactional, inside the transaction: captured on its own, before
-- the transaction (it is decoded when written, the transaction at commit).
SELECT pg_logical_emit_message(false, 'msg_nontx', 'inside') AS inside_end \gset
COMMIT;
-- Non-transactional, outside any transaction.
SELECT 'emitted' FROM pg_logical_emit_message(false, 'msg_nontx', 'outside');
-- bytea content: any bytes; an empty content; an empty prefix; unicode.
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_bytes', '\x00010203ff'::bytea);
SELECT 'emitted' FROM pg_logical_emit_message(false, 'msg_bytes', '\xdeadbeef00'::bytea);
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_empty', '');
SELECT 'emitted' FROM pg_logical_emit_message(true, '', 'empty prefix');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_ünï€ode', 'grüße 😀');
-- Rolled back: the transactional message goes, the non-transactional one
-- stays.
BEGIN;
INSERT INTO msg_t VALUES (3);
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_rollback', 'gone');
SELECT 'emitted' FROM pg_logical_emit_message(false, 'msg_rollback', 'stays');
ROLLBACK;
-- Rolled back to a savepoint: likewise.
BEGIN;
SAVEPOINT s1;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_savepoint', 'gone');
ROLLBACK TO SAVEPOINT s1;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_savepoint', 'kept');
COMMIT;
-- A big message.
SELECT 'emitted' FROM pg_logical_emit_message(true, 'msg_big', repeat('m', 100000));
SELECT public.wait_sub('msg');

SELECT dense_rank() OVER (ORDER BY commit_lsn) AS txn, seq, op, table_name, new,
       message_prefix,
       CASE WHEN length(message_content) > 100 THEN 'length ' || length(message_content)
            ELSE message_content::text END AS content,
       xid IS NOT NULL AS in_transaction
  FROM pgrpl.changes('msg')
 ORDER BY commit_lsn, seq;
-- Text content reads back with convert_from.
SELECT convert_from(message_content, 'UTF8') AS text_content
  FROM pgrpl.changes('msg') WHERE message_prefix = 'msg_ünï€ode';
SELECT message_content = convert_to(repeat('m', 100000), 'UTF8') AS big_intact
  FROM pgrpl.changes('msg') WHERE message_prefix = 'msg_big';
-- A non-transactional message is a unit of its own (state 'm': no xid, no
-- commit time, not listed by transactions()); its commit_lsn is its own
-- LSN, its seq 1.
SELECT count(*) AS nontx, bool_and(t.commit_lsn = c.lsn AND c.seq = 1) AS own_lsn,
       bool_and(t.state = 'm' AND t.xid IS NULL AND t.commit_time IS NULL
                AND t.changes = 1) AS message_unit
  FROM pgrpl.change c
  JOIN pgrpl.transaction t USING (sub_id, txn_id)
 WHERE c.message_prefix IN ('msg_nontx', 'msg_rollback') OR c.message_content = '\xdeadbeef00';
SELECT count(*) AS listed_as_transactions
  FROM pgrpl.transactions('msg') t
  JOIN pgrpl.changes('msg') c USING (commit_lsn)
 WHERE c.message_prefix IN ('msg_nontx', 'msg_rollback') AND c.xid IS NULL;
-- pg_logical_emit_message returns the end of the message's WAL record,
-- where the commit record of the transaction that emitted it can start:
-- the message's row is one byte before, so it sorts first and cannot be
-- confused with that transaction.
SELECT c.lsn = :'inside_end'::pg_lsn - 1 AS just_before_end,
       c.commit_lsn < (SELECT commit_lsn FROM pgrpl.changes('msg')
                        WHERE message_content = 'between') AS before_its_transaction
  FROM pgrpl.changes('msg') c WHERE c.message_content = 'inside';
-- Every other change belongs to a transaction row with the right count.
SELECT bool_and(t.changes = (SELECT count(*) FROM pgrpl.change c
                              WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id))
       AS counts_match
  FROM pgrpl.transaction t;

SELECT name, state, last_error FROM pgrpl.stat_subscription;
SELECT pgrpl.drop_subscription('msg');
DROP PUBLICATION msg_pub;
DROP TABLE msg_t;
