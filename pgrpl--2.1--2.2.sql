/* pgrpl--2.1--2.2.sql: origin filter and failover slots */

\echo Use "ALTER EXTENSION pgrpl UPDATE TO '2.2'" to load this file. \quit

-- Which remote transactions are captured: 'any' (all), or 'none' (only
-- those without a replication origin, i.e. not applied there by another
-- replication).  A PostgreSQL 16+ primary filters them itself; from older
-- ones pgrpl drops a transaction whose ORIGIN message says it has one.
ALTER TABLE pgrpl.subscription
    ADD COLUMN origin text NOT NULL DEFAULT 'any'
        CONSTRAINT subscription_origin_check CHECK (origin IN ('any', 'none'));

-- Whether the slot on the primary is a failover slot (PostgreSQL 17+
-- primaries), synchronized to its standbys so that capture survives a
-- failover.  The worker makes the slot say so whenever it connects.
-- create_subscription's failover => NULL (the default) means false for a
-- slot it creates and what an existing slot (create_slot => false) is.
ALTER TABLE pgrpl.subscription ADD COLUMN failover boolean NOT NULL DEFAULT false;

DROP FUNCTION pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean, boolean);
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
    two_phase boolean DEFAULT false,
    origin text DEFAULT 'any',
    failover boolean DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_create_subscription';

-- NULL arguments keep the setting.
DROP FUNCTION pgrpl.alter_subscription(text, text, text[], interval, boolean);
CREATE FUNCTION pgrpl.alter_subscription(
    name text,
    conninfo text DEFAULT NULL,
    publications text[] DEFAULT NULL,
    retention interval DEFAULT NULL,
    streaming boolean DEFAULT NULL,
    origin text DEFAULT NULL,
    failover boolean DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_alter_subscription';

REVOKE ALL ON FUNCTION
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean, boolean, text, boolean),
    pgrpl.alter_subscription(text, text, text[], interval, boolean, text, boolean)
FROM PUBLIC;

CREATE OR REPLACE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at,
       s.retention, s.streaming, s.two_phase, s.origin, s.failover
  FROM pgrpl.subscription s;
