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

-- A message from inside a stream block: its changes carry the
-- (sub)transaction's xid first.  decode(message) stays as it was.
CREATE FUNCTION pgrpl.decode(message bytea, in_stream boolean)
RETURNS jsonb
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgrpl_decode_sql';

REVOKE ALL ON FUNCTION pgrpl.worker_status() FROM PUBLIC;
REVOKE ALL ON pgrpl.stat_subscription FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Two-phase decoding (pgoutput protocol 3, PostgreSQL 15+ primaries)
-- ---------------------------------------------------------------------

-- Whether the worker asks the primary to decode prepared transactions at
-- PREPARE.  Fixed at creation: once the primary's slot decodes at PREPARE,
-- it cannot be turned back before PostgreSQL 18.
ALTER TABLE pgrpl.subscription ADD COLUMN two_phase boolean NOT NULL DEFAULT false;

DROP FUNCTION pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean);
CREATE FUNCTION pgrpl.create_subscription(
    name text,
    conninfo text,
    publications text[],
    slot_name text DEFAULT NULL,
    create_slot boolean DEFAULT true,
    enabled boolean DEFAULT true,
    stop_lsn pg_lsn DEFAULT NULL,
    retention interval DEFAULT NULL,
    streaming boolean DEFAULT true,
    two_phase boolean DEFAULT false)
RETURNS pg_lsn
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_create_subscription';

REVOKE ALL ON FUNCTION
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean, boolean)
FROM PUBLIC;

CREATE OR REPLACE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at,
       s.retention, s.streaming, s.two_phase
  FROM pgrpl.subscription s;

-- A prepared transaction (state 'p': rows written, commit_lsn NULL, not
-- visible) has its gid, the LSN and time of its PREPARE, and end_lsn the
-- end of its PREPARE until COMMIT PREPARED sets commit_lsn and end_lsn
-- (state 'c') or ROLLBACK PREPARED removes its rows (state 'a').  Added on
-- the partitioned parent: every partition, present or future, has them.
ALTER TABLE pgrpl.transaction
    ADD COLUMN gid text,
    ADD COLUMN prepare_lsn pg_lsn,
    ADD COLUMN prepare_time timestamptz;

-- COMMIT/ROLLBACK PREPARED find their transaction by gid: only the few
-- prepared ones are indexed.
CREATE INDEX transaction_prepared_gid ON pgrpl.transaction (sub_id, gid) WHERE state = 'p';

-- The library of 2.1 writes the transaction table with the columns above.
CREATE OR REPLACE FUNCTION pgrpl.storage_version()
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'SELECT 3';

-- Captured transactions after after_lsn (non-transactional messages are
-- not transactions), at most max_rows of them; then those prepared on the
-- primary and not yet committed or rolled back (commit_lsn NULL, state
-- 'prepared'), in PREPARE order whatever after_lsn says: their changes
-- are not in changes() until they commit.
-- Its result type changes: it is dropped and created again.  The EXECUTE
-- grants to reader roles (see the README) are kept across that.
SELECT pg_catalog.set_config('pgrpl_upgrade.transactions_acl',
       COALESCE((SELECT p.proacl::text FROM pg_catalog.pg_proc p
                  WHERE p.oid = 'pgrpl.transactions(text, pg_lsn, bigint)'::pg_catalog.regprocedure),
                ''), true);
DROP FUNCTION pgrpl.transactions(text, pg_lsn, bigint);
CREATE FUNCTION pgrpl.transactions(subscription text, after_lsn pg_lsn DEFAULT NULL,
                                   max_rows bigint DEFAULT NULL)
RETURNS TABLE (commit_lsn pg_lsn, end_lsn pg_lsn, xid bigint,
               commit_time timestamptz, origin text, changes integer,
               state text, gid text, prepare_time timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Plans for these arguments: pruned to the subscription's partitions at
-- plan time and costed with the relation's own statistics (a generic plan
-- can do neither); no parallel workers for queries that read a few rows.
SET plan_cache_mode = force_custom_plan
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    n bigint;
BEGIN
    PERFORM pgrpl.check_max_rows(max_rows);
    RETURN QUERY
    SELECT t.commit_lsn, t.end_lsn, t.xid, t.commit_time, t.origin, t.changes,
           'committed'::text, t.gid, t.prepare_time
      FROM pgrpl.transaction t
     WHERE t.sub_id = sid AND t.commit_lsn > COALESCE(after_lsn, '0/0')
       AND t.state = 'c'
     ORDER BY t.commit_lsn
     LIMIT max_rows;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF max_rows IS NOT NULL AND n >= max_rows THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT t.commit_lsn, t.end_lsn, t.xid, t.commit_time, t.origin, t.changes,
           'prepared'::text, t.gid, t.prepare_time
      FROM pgrpl.transaction t
     WHERE t.sub_id = sid AND t.state = 'p'
     ORDER BY t.prepare_lsn
     LIMIT max_rows - n;
END
$$;

REVOKE ALL ON FUNCTION pgrpl.transactions(text, pg_lsn, bigint) FROM PUBLIC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.grantee, a.is_grantable
          FROM pg_catalog.aclexplode(NULLIF(
                   pg_catalog.current_setting('pgrpl_upgrade.transactions_acl'), '')::pg_catalog.aclitem[]) a
          JOIN pg_catalog.pg_proc p
            ON p.oid OPERATOR(pg_catalog.=) 'pgrpl.transactions(text, pg_lsn, bigint)'::pg_catalog.regprocedure
         WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION pgrpl.transactions(text, pg_lsn, bigint) TO %s%s',
                                  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
