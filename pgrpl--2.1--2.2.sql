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
    failover boolean DEFAULT NULL,
    copy_data boolean DEFAULT true)
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
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval, boolean, boolean, text, boolean, boolean),
    pgrpl.alter_subscription(text, text, text[], interval, boolean, text, boolean)
FROM PUBLIC;

CREATE OR REPLACE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at,
       s.retention, s.streaming, s.two_phase, s.origin, s.failover
  FROM pgrpl.subscription s;

-- ---------------------------------------------------------------------
-- Snapshots: the rows a table had before capture started
-- ---------------------------------------------------------------------

-- One row per published table the subscription knows: whether (and how
-- far) its existing rows were copied.  state: p pending, c copying, d done
-- (or known without a copy), e error (retried at the next session).
-- last_key: the paging key's values of the last row of the last finished
-- chunk, where a copy resumes; written in the same local transaction as
-- that chunk's rows.
CREATE TABLE pgrpl.snapshot (
    sub_id       integer NOT NULL REFERENCES pgrpl.subscription ON DELETE CASCADE,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    state        "char" NOT NULL DEFAULT 'p' CHECK (state IN ('p', 'c', 'd', 'e')),
    last_key     text[],
    rows_copied  bigint NOT NULL DEFAULT 0,
    chunks       bigint NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    last_error   text,
    PRIMARY KEY (sub_id, schema_name, table_name)
);
REVOKE ALL ON pgrpl.snapshot FROM PUBLIC;

-- Copy the table again (on demand, while streaming goes on).
CREATE FUNCTION pgrpl.snapshot(subscription text, relation text)
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_snapshot_table';

-- Copy the tables the publications publish now that the subscription does
-- not know yet; returns how many.
CREATE FUNCTION pgrpl.refresh_subscription(name text, copy_data boolean DEFAULT true)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_refresh_subscription';

REVOKE ALL ON FUNCTION pgrpl.snapshot(text, text), pgrpl.refresh_subscription(text, boolean)
FROM PUBLIC;

CREATE VIEW pgrpl.stat_snapshot AS
SELECT s.sub_name AS subscription,
       pg_catalog.quote_ident(n.schema_name) || '.' || pg_catalog.quote_ident(n.table_name) AS relation,
       CASE n.state WHEN 'p' THEN 'pending' WHEN 'c' THEN 'copying'
                    WHEN 'd' THEN 'done' WHEN 'e' THEN 'error' END AS state,
       n.rows_copied,
       CASE WHEN n.started_at IS NOT NULL
                 AND COALESCE(n.finished_at, now()) > n.started_at
            THEN round(n.rows_copied / extract(epoch FROM COALESCE(n.finished_at, now()) - n.started_at))
       END AS rows_per_second,
       n.chunks, n.requested_at, n.started_at, n.finished_at, n.last_error
  FROM pgrpl.snapshot n JOIN pgrpl.subscription s USING (sub_id);
REVOKE ALL ON pgrpl.stat_snapshot FROM PUBLIC;

-- The subscription says 'snapshot' while one of its tables is being copied.
CREATE OR REPLACE VIEW pgrpl.stat_subscription AS
SELECT s.sub_name AS name,
       w.pid,
       CASE WHEN w.state = 'finished' THEN 'finished'
            WHEN NOT s.enabled THEN 'disabled'
            WHEN w.state = 'streaming' AND EXISTS (
                     SELECT FROM pgrpl.snapshot n
                      WHERE n.sub_id = s.sub_id AND n.state IN ('p', 'c')) THEN 'snapshot'
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

-- The read functions know op 'S' (SNAPSHOT): a row as it was when copied,
-- which a later change of its key supersedes.
-- The cursor.  Changes of transactions committed after after_lsn, in
-- (commit_lsn, seq) order; max_rows stops after the transaction that holds
-- the max_rows-th row, so a transaction is never split.  The worker commits
-- remote transactions in commit_lsn order, so what a snapshot sees is a
-- prefix: looping with after_lsn = the last commit_lsn seen returns each
-- change once.  Without a relation the transactions drive (their index on
-- commit_lsn, then each one's changes by primary key); with one, that
-- relation's changes do (the rel_id index), so the cost follows the rows
-- asked about, not the size of the log.
CREATE OR REPLACE FUNCTION pgrpl.changes(subscription text, after_lsn pg_lsn DEFAULT NULL,
                                         max_rows bigint DEFAULT NULL, relation text DEFAULT NULL)
RETURNS TABLE (commit_lsn pg_lsn, seq integer, lsn pg_lsn, xid bigint,
               commit_time timestamptz, op text, schema_name text, table_name text,
               old jsonb, new jsonb, unchanged text[], message_prefix text,
               message_content bytea, origin text)
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
    after pg_lsn := COALESCE(after_lsn, '0/0');
    rels integer[];
    upto pg_lsn;
    tx record;
    n bigint := 0;
BEGIN
    PERFORM pgrpl.check_max_rows(max_rows);
    IF relation IS NULL THEN
        IF max_rows IS NOT NULL THEN
            -- Count whole transactions in order until max_rows is reached;
            -- the loop's cursor reads the commit_lsn index from after_lsn on.
            FOR tx IN
                SELECT t.commit_lsn, t.changes FROM pgrpl.transaction t
                 WHERE t.sub_id = sid AND t.commit_lsn > after
                 ORDER BY t.commit_lsn
            LOOP
                n := n + tx.changes;
                IF n >= max_rows THEN
                    upto := tx.commit_lsn;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        upto := COALESCE(upto, 'FFFFFFFF/FFFFFFFF');
        RETURN QUERY
        SELECT t.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
               CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                         WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE'
                         WHEN 'M' THEN 'MESSAGE' WHEN 'S' THEN 'SNAPSHOT' END,
               r.schema_name, r.table_name, c.old, c.new, c.unchanged,
               c.message_prefix, c.message_content, t.origin
          FROM pgrpl.transaction t
          JOIN pgrpl.change c ON c.sub_id = t.sub_id AND c.txn_id = t.txn_id
          LEFT JOIN pgrpl.relation r ON r.rel_id = c.rel_id
         WHERE t.sub_id = sid AND t.commit_lsn > after AND t.commit_lsn <= upto
         ORDER BY t.commit_lsn, c.seq;
        RETURN;
    END IF;

    rels := pgrpl.relation_ids(sid, relation);
    IF max_rows IS NOT NULL THEN
        SELECT t.commit_lsn INTO upto
          FROM pgrpl.change c
          JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
         WHERE c.sub_id = sid AND c.rel_id = ANY (rels) AND t.commit_lsn > after
         ORDER BY t.commit_lsn, c.seq
        OFFSET max_rows - 1 LIMIT 1;
    END IF;
    upto := COALESCE(upto, 'FFFFFFFF/FFFFFFFF');
    RETURN QUERY
    SELECT t.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
           CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                     WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE'
                     WHEN 'S' THEN 'SNAPSHOT' END,
           r.schema_name, r.table_name, c.old, c.new, c.unchanged,
           c.message_prefix, c.message_content, t.origin
      FROM pgrpl.change c
      JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
      JOIN pgrpl.relation r ON r.rel_id = c.rel_id
     WHERE c.sub_id = sid AND c.rel_id = ANY (rels)
       AND t.commit_lsn > after AND t.commit_lsn <= upto
     ORDER BY t.commit_lsn, c.seq;
END
$$;

-- Every change of the row whose replica identity is key, oldest first.
-- Keys the row had before or after an UPDATE that changed its key are
-- followed both ways (old_key links them), each looked up in the
-- relation's part of the key index.
CREATE OR REPLACE FUNCTION pgrpl.row_history(subscription text, relation text, key jsonb)
RETURNS TABLE (commit_lsn pg_lsn, seq integer, lsn pg_lsn, xid bigint,
               commit_time timestamptz, op text, old jsonb, new jsonb,
               unchanged text[], row_key jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Plans for these arguments: pruned to the subscription's partitions at
-- plan time and costed with the relation's own statistics (a generic plan
-- can do neither); no parallel workers for queries that read a few rows.
SET plan_cache_mode = force_custom_plan
SET max_parallel_workers_per_gather = 0
SET jit = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    rels integer[];
    keys jsonb[];
    i integer := 1;
    k jsonb;
    other jsonb;
BEGIN
    PERFORM pgrpl.split_relation(relation);
    IF key IS NULL OR jsonb_typeof(key) <> 'object' THEN
        RAISE EXCEPTION 'key must be a JSON object of replica identity columns'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{"id": 42}''.';
    END IF;
    rels := pgrpl.relation_ids(sid, relation);
    -- Close the key set under key changes: UPDATEs into k (old_key is
    -- where the row came from) and UPDATEs out of k (row_key is where it
    -- went).  Each lookup is an equality on one index.
    keys := ARRAY[key];
    -- Most tables never change a row's key: then there is nothing to
    -- follow (one probe of the small partial index instead of two joins).
    IF NOT EXISTS (SELECT 1 FROM pgrpl.change c
                    WHERE c.sub_id = sid AND c.rel_id = ANY (rels)
                      AND c.old_key IS NOT NULL) THEN
        i := 2;
    END IF;
    WHILE i <= cardinality(keys) LOOP
        k := keys[i];
        FOR other IN
            SELECT c.old_key FROM pgrpl.change c
              JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
             WHERE c.sub_id = sid AND c.rel_id = ANY (rels)
               AND c.key_hash = pgrpl.row_key_hash(k) AND c.row_key = k
               AND c.old_key IS NOT NULL AND t.commit_lsn IS NOT NULL
            UNION ALL
            SELECT c.row_key FROM pgrpl.change c
              JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
             WHERE c.sub_id = sid AND c.rel_id = ANY (rels) AND c.old_key IS NOT NULL
               AND pgrpl.row_key_hash(c.old_key) = pgrpl.row_key_hash(k)
               AND c.old_key = k AND t.commit_lsn IS NOT NULL
        LOOP
            IF other IS NOT NULL AND NOT other = ANY (keys) THEN
                keys := keys || other;
            END IF;
        END LOOP;
        i := i + 1;
    END LOOP;

    -- A key change has its new key as row_key, which is in the set too.
    RETURN QUERY
    SELECT t.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
           CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                     WHEN 'D' THEN 'DELETE' WHEN 'S' THEN 'SNAPSHOT' END,
           c.old, c.new, c.unchanged, c.row_key
      FROM unnest(keys) AS ks(kv)
      JOIN pgrpl.change c
        ON c.sub_id = sid AND c.rel_id = ANY (rels)
       AND c.key_hash = pgrpl.row_key_hash(ks.kv) AND c.row_key = ks.kv
      JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
     WHERE t.commit_lsn IS NOT NULL
     ORDER BY t.commit_lsn, c.seq;
END
$$;

-- The values of a row's unchanged TOASTed columns as of just before
-- (lsn, seq): walk the row's earlier changes back, through key changes,
-- until each column is seen; a column never seen stays absent.
CREATE OR REPLACE FUNCTION pgrpl.fill_unchanged(sid integer, rels integer[], key jsonb,
                                     at_lsn pg_lsn, at_seq integer, at_old_key jsonb,
                                     val jsonb, cols text[])
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- Plans for these arguments: pruned to the subscription's partitions at
-- plan time and costed with the relation's own statistics (a generic plan
-- can do neither); no parallel workers for queries that read a few rows.
SET plan_cache_mode = force_custom_plan
SET max_parallel_workers_per_gather = 0
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    c record;
    col text;
    missing text[] := cols;
BEGIN
    -- The change itself may be the one that gave the row this key.
    key := COALESCE(at_old_key, key);
    WHILE cardinality(missing) > 0 AND key IS NOT NULL LOOP
        SELECT t.commit_lsn, ch.seq, ch.op, ch.old, ch.new, ch.old_key INTO c
          FROM pgrpl.change ch
          JOIN pgrpl.transaction t ON t.sub_id = ch.sub_id AND t.txn_id = ch.txn_id
         WHERE ch.sub_id = sid AND ch.rel_id = ANY (rels)
           AND ch.key_hash = pgrpl.row_key_hash(key) AND ch.row_key = key
           AND t.commit_lsn IS NOT NULL
           AND (t.commit_lsn, ch.seq) < (at_lsn, at_seq)
         ORDER BY t.commit_lsn DESC, ch.seq DESC
         LIMIT 1;
        -- Nothing earlier, or an earlier incarnation of the key: not seen.
        EXIT WHEN NOT FOUND OR c.op NOT IN ('I', 'U', 'S');
        FOREACH col IN ARRAY missing LOOP
            IF c.new ? col THEN
                val := val || jsonb_build_object(col, c.new -> col);
                missing := array_remove(missing, col);
            ELSIF c.old ? col THEN      -- REPLICA IDENTITY FULL sends it
                val := val || jsonb_build_object(col, c.old -> col);
                missing := array_remove(missing, col);
            END IF;
        END LOOP;
        at_lsn := c.commit_lsn;
        at_seq := c.seq;
        key := COALESCE(c.old_key, key);
    END LOOP;
    RETURN val;
END
$$;

-- The rows of a remote table after the last transaction committed at or
-- before as_of (NULL: everything captured), rebuilt from the log: per key
-- the last change wins, an UPDATE that changed the key deletes the old key,
-- and the last TRUNCATE starts from empty.  Only the relation's own changes
-- are read (the rel_id index).
CREATE OR REPLACE FUNCTION pgrpl.table_as_of(subscription text, relation text,
                                             as_of pg_lsn DEFAULT NULL)
RETURNS SETOF jsonb
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
    nsp text;
    rel text;
    rels integer[];
    keyless integer[];
    upto pg_lsn := COALESCE(as_of, 'FFFFFFFF/FFFFFFFF');
    r record;
BEGIN
    SELECT s.schema_name, s.table_name INTO nsp, rel FROM pgrpl.split_relation(relation) s;
    rels := pgrpl.relation_ids(sid, relation);
    SELECT COALESCE(array_agg(v.rel_id), '{}') INTO keyless
      FROM pgrpl.relation v
     WHERE v.rel_id = ANY (rels) AND cardinality(v.key_columns) = 0;
    IF cardinality(keyless) > 0 AND EXISTS (
           SELECT 1 FROM pgrpl.change c
             JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
            WHERE c.sub_id = sid AND c.rel_id = ANY (keyless)
              AND c.op IN ('I', 'U', 'D', 'S') AND c.row_key IS NULL
              AND t.commit_lsn <= upto) THEN
        RAISE EXCEPTION 'cannot rebuild relation "%"."%" from the change log', nsp, rel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its changes were captured without a replica identity key.',
                  HINT = 'Give the table a primary key or set REPLICA IDENTITY FULL (or USING INDEX) on the primary.';
    END IF;
    -- One pass over the relation's changes (the rel_id index; one plan over
    -- the partitions, not one per step: planning dominates for a small
    -- relation): the last TRUNCATE at or before as_of, the changes after
    -- it, a key change also deleting the old key, then per key the last.
    FOR r IN
        WITH ch AS (
            SELECT t.commit_lsn, c.seq, c.op, c.row_key, c.new, c.unchanged, c.old_key
              FROM pgrpl.change c
              JOIN pgrpl.transaction t ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
             WHERE c.sub_id = sid AND c.rel_id = ANY (rels) AND t.commit_lsn <= upto
        ), cut AS (
            SELECT ch.commit_lsn, ch.seq FROM ch WHERE ch.op = 'T'
             ORDER BY ch.commit_lsn DESC, ch.seq DESC LIMIT 1
        ), live AS (
            SELECT ch.* FROM ch
             WHERE NOT EXISTS (SELECT 1 FROM cut
                                WHERE (ch.commit_lsn, ch.seq) <= (cut.commit_lsn, cut.seq))
        ), keyed AS (
            SELECT l.commit_lsn, l.seq, l.op, l.row_key AS k, l.new, l.unchanged, l.old_key
              FROM live l WHERE l.op IN ('I', 'U', 'D', 'S')
            UNION ALL
            SELECT l.commit_lsn, l.seq, 'D', l.old_key, NULL, NULL, NULL
              FROM live l WHERE l.old_key IS NOT NULL
        )
        SELECT DISTINCT ON (keyed.k) keyed.*
          FROM keyed
         ORDER BY keyed.k, keyed.commit_lsn DESC, keyed.seq DESC
    LOOP
        CONTINUE WHEN r.op = 'D';
        IF r.unchanged IS NULL THEN
            RETURN NEXT r.new;
        ELSE
            RETURN NEXT pgrpl.fill_unchanged(sid, rels, r.k, r.commit_lsn, r.seq,
                                             r.old_key, r.new, r.unchanged);
        END IF;
    END LOOP;
END
$$;
