/* pgrpl--1.0.sql: catalog tables, change log and SQL API of pgrpl 1.0 */

\echo Use "CREATE EXTENSION pgrpl" to load this file. \quit

-- Refuse to install when the library is not preloaded: without the launcher no
-- worker would ever run and subscriptions would silently capture nothing.
CREATE FUNCTION pgrpl.check_preloaded() RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'pgrpl_check_preloaded';
SELECT pgrpl.check_preloaded();

-- One row per subscription.  conninfo may hold a password: the table is
-- readable by superusers only; everyone else sees pgrpl.subscriptions.
CREATE TABLE pgrpl.subscription (
    sub_id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sub_name         text NOT NULL UNIQUE,
    enabled          boolean NOT NULL DEFAULT true,
    conninfo         text NOT NULL,
    publications     text[] NOT NULL,
    slot_name        text NOT NULL,
    stop_lsn         pg_lsn,
    system_identifier text NOT NULL,
    start_lsn        pg_lsn NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- One row per captured remote transaction.  end_lsn is the position streaming
-- restarts after; the replication origin holds the same value atomically.
CREATE TABLE pgrpl.transaction (
    sub_id       integer NOT NULL REFERENCES pgrpl.subscription ON DELETE CASCADE,
    commit_lsn   pg_lsn NOT NULL,
    end_lsn      pg_lsn NOT NULL,
    xid          bigint NOT NULL,
    commit_time  timestamptz NOT NULL,
    origin       text,
    origin_lsn   pg_lsn,
    changes      integer NOT NULL,
    PRIMARY KEY (sub_id, commit_lsn)
);

-- One row per captured change.  (sub_id, commit_lsn, seq) is the cursor order.
-- A non-transactional message has no transaction row and seq 1; its
-- commit_lsn and lsn are one byte before the end of its WAL record (pgoutput
-- reports the end, where the commit record of the next transaction -- often
-- the one that emitted it -- can start).  No foreign key to pgrpl.transaction:
-- the writer inserts changes before their transaction row, and a per-row
-- check would cost more than it protects.
CREATE TABLE pgrpl.change (
    sub_id          integer NOT NULL,
    commit_lsn      pg_lsn NOT NULL,
    seq             integer NOT NULL,
    lsn             pg_lsn NOT NULL,
    op              "char" NOT NULL,
    schema_name     text,
    table_name      text,
    old             jsonb,
    new             jsonb,
    unchanged       text[],
    message_prefix  text,
    message_content bytea,
    PRIMARY KEY (sub_id, commit_lsn, seq)
);

REVOKE ALL ON pgrpl.subscription, pgrpl.transaction, pgrpl.change FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('pgrpl.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('pgrpl.transaction', '');
SELECT pg_catalog.pg_extension_config_dump('pgrpl.change', '');

CREATE FUNCTION pgrpl.create_subscription(
    name text,
    conninfo text,
    publications text[],
    slot_name text DEFAULT NULL,
    create_slot boolean DEFAULT true,
    enabled boolean DEFAULT true,
    stop_lsn pg_lsn DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_create_subscription';

CREATE FUNCTION pgrpl.drop_subscription(name text, drop_slot boolean DEFAULT true)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_drop_subscription';

CREATE FUNCTION pgrpl.enable_subscription(name text)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_enable_subscription';

CREATE FUNCTION pgrpl.disable_subscription(name text)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_disable_subscription';

CREATE FUNCTION pgrpl.alter_subscription(
    name text,
    conninfo text DEFAULT NULL,
    publications text[] DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_alter_subscription';

CREATE FUNCTION pgrpl.set_stop_lsn(name text, stop_lsn pg_lsn)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_set_stop_lsn';

CREATE FUNCTION pgrpl.wait_for_lsn(name text, target pg_lsn,
                                   timeout interval DEFAULT '30 seconds')
RETURNS boolean
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_wait_for_lsn';

CREATE FUNCTION pgrpl.mask_conninfo(conninfo text)
RETURNS text
LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'pgrpl_mask_conninfo';

-- Live worker state of the subscriptions of this database (shared memory).
CREATE FUNCTION pgrpl.worker_status(
    OUT sub_id integer, OUT pid integer, OUT state text,
    OUT received_lsn pg_lsn, OUT flushed_lsn pg_lsn, OUT latest_end_lsn pg_lsn,
    OUT last_msg_send_time timestamptz, OUT last_msg_receipt_time timestamptz,
    OUT latest_end_time timestamptz, OUT transactions bigint, OUT changes bigint,
    OUT bytes_received bigint, OUT last_error text, OUT last_error_time timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_worker_status';

CREATE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at
  FROM pgrpl.subscription s;

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
       w.last_error, w.last_error_time
  FROM pgrpl.subscription s
  LEFT JOIN pgrpl.worker_status() w ON w.sub_id = s.sub_id;

CREATE FUNCTION pgrpl.changes(subscription text)
RETURNS TABLE (commit_lsn pg_lsn, seq integer, lsn pg_lsn, xid bigint,
               commit_time timestamptz, op text, schema_name text, table_name text,
               old jsonb, new jsonb, unchanged text[], message_prefix text,
               message_content bytea, origin text)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
           CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                     WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE'
                     WHEN 'M' THEN 'MESSAGE' END,
           c.schema_name, c.table_name, c.old, c.new, c.unchanged,
           c.message_prefix, c.message_content, t.origin
      FROM pgrpl.subscription s
      JOIN pgrpl.change c ON c.sub_id = s.sub_id
      LEFT JOIN pgrpl.transaction t
             ON t.sub_id = c.sub_id AND t.commit_lsn = c.commit_lsn
     WHERE s.sub_name = subscription
     ORDER BY c.commit_lsn, c.seq
$$;

-- Superuser-only API: these functions open connections with the server's
-- credentials or expose captured data.
REVOKE ALL ON FUNCTION
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn),
    pgrpl.drop_subscription(text, boolean),
    pgrpl.enable_subscription(text),
    pgrpl.disable_subscription(text),
    pgrpl.alter_subscription(text, text, text[]),
    pgrpl.set_stop_lsn(text, pg_lsn),
    pgrpl.wait_for_lsn(text, pg_lsn, interval),
    pgrpl.worker_status(),
    pgrpl.changes(text)
FROM PUBLIC;
REVOKE ALL ON pgrpl.subscriptions, pgrpl.stat_subscription FROM PUBLIC;
