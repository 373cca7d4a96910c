/* pgrpl--2.0--2.1.sql: streamed transactions (pgoutput protocol 2+) */

\echo Use "ALTER EXTENSION pgrpl UPDATE TO '2.1'" to load this file. \quit

-- Whether the worker asks the primary to stream large transactions while
-- they run (PostgreSQL 14+ primaries; older ones never stream).
ALTER TABLE pgrpl.subscription ADD COLUMN streaming boolean NOT NULL DEFAULT true;

DROP FUNCTION pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval);
CREATE FUNCTION pgrpl.create_subscription(
    name text,
    conninfo text,
    publications text[],
    slot_name text DEFAULT NULL,
    create_slot boolean DEFAULT true,
    enabled boolean DEFAULT true,
    stop_lsn pg_lsn DEFAULT NULL,
    retention interval DEFAULT NULL,
    streaming boolean DEFAULT true)
RETURNS pg_lsn
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_create_subscription';

-- NULL arguments keep the setting.
DROP FUNCTION pgrpl.alter_subscription(text, text, text[], interval);
CREATE FUNCTION pgrpl.alter_subscription(
    name text,
    conninfo text DEFAULT NULL,
    publications text[] DEFAULT NULL,
    retention interval DEFAULT NULL,
    streaming boolean DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_alter_subscription';

REVOKE ALL ON FUNCTION
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean),
    pgrpl.alter_subscription(text, text, text[], interval, boolean)
FROM PUBLIC;

CREATE OR REPLACE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at,
       s.retention, s.streaming
  FROM pgrpl.subscription s;

-- Live worker state, now with the negotiated protocol and streaming.
DROP VIEW pgrpl.stat_subscription;
DROP FUNCTION pgrpl.worker_status();
CREATE FUNCTION pgrpl.worker_status(
    OUT sub_id integer, OUT pid integer, OUT state text,
    OUT received_lsn pg_lsn, OUT flushed_lsn pg_lsn, OUT latest_end_lsn pg_lsn,
    OUT last_msg_send_time timestamptz, OUT last_msg_receipt_time timestamptz,
    OUT latest_end_time timestamptz, OUT transactions bigint, OUT changes bigint,
    OUT bytes_received bigint, OUT last_error text, OUT last_error_time timestamptz,
    OUT proto_version integer, OUT streamed_transactions bigint,
    OUT streamed_bytes bigint, OUT streams_in_progress integer)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_worker_status';

-- transactions counts streamed ones too; streamed_transactions says how
-- many of them were streamed, streamed_bytes how much arrived in stream
-- chunks, streams_in_progress how many are being received now.
CREATE VIEW pgrpl.stat_subscription AS
SELECT s.sub_name AS name,
       w.pid,
       CASE WHEN w.state = 'finished' THEN 'finished'
            WHEN NOT s.enabled THEN 'disabled'
            ELSE COALESCE(w.state, 'starting') END AS state,
       w.received_lsn, w.flushed_lsn, w.latest_end_lsn,
       w.last_msg_send_time, w.last_msg_receipt_time, w.latest_end_time,
       COALESCE(w.transactions, 0) AS transactions,
       COALESCE(w.changes, 0) AS changes,
       COALESCE(w.bytes_received, 0) AS bytes_received,
       w.last_error, w.last_error_time,
       w.proto_version,
       COALESCE(w.streamed_transactions, 0) AS streamed_transactions,
       COALESCE(w.streamed_bytes, 0) AS streamed_bytes,
       COALESCE(w.streams_in_progress, 0) AS streams_in_progress
  FROM pgrpl.subscription s
  LEFT JOIN pgrpl.worker_status() w ON w.sub_id = s.sub_id;

REVOKE ALL ON FUNCTION pgrpl.worker_status() FROM PUBLIC;
REVOKE ALL ON pgrpl.stat_subscription FROM PUBLIC;
