/* pgrpl--1.1.sql: catalog tables, change log and SQL API of pgrpl 1.1 */

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
    row_key         jsonb,      -- replica identity of the row after the change
    key_hash        bigint,     -- pgrpl.key_hash(schema_name, table_name, row_key)
    old_key         jsonb,      -- UPDATE only: the identity before, if it changed
    PRIMARY KEY (sub_id, commit_lsn, seq)
);

-- Large values in the log are compressed with lz4 where the server has it:
-- pglz spent a third of the worker's time on rows with an incompressible
-- TOASTed column (measured, workload (c) of scripts/bench.sh); lz4 is many
-- times faster and gives up quickly on data that does not compress.
DO $$
BEGIN
    ALTER TABLE pgrpl.change
        ALTER COLUMN old SET COMPRESSION lz4,
        ALTER COLUMN new SET COMPRESSION lz4,
        ALTER COLUMN unchanged SET COMPRESSION lz4,
        ALTER COLUMN message_content SET COMPRESSION lz4,
        ALTER COLUMN row_key SET COMPRESSION lz4,
        ALTER COLUMN old_key SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;   -- built without lz4: the server's default_toast_compression
END
$$;

-- Row lookup key of a replica identity key: for one integer column the
-- relation's tag and the integer (in order, so the index grows where the
-- table's own primary key does), else jsonb's extended hash seeded with the
-- relation name.  Not unique: queries also compare relation and row_key.
-- The worker computes key_hash with the same C code.
CREATE FUNCTION pgrpl.key_hash(schema_name text, table_name text, key jsonb)
RETURNS bigint
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgrpl_key_hash_sql';

COMMENT ON FUNCTION pgrpl.key_hash(text, text, jsonb) IS
    'row lookup key of a replica identity key: for one integer column the relation''s tag and the integer, else a hash; not unique';

-- row_history() and table_as_of() find a row's changes by its key.  The
-- second index only holds UPDATEs that changed the key (rare), so writes pay
-- for one small index.  The cursor uses the primary key.
CREATE INDEX change_key_idx ON pgrpl.change (sub_id, key_hash);
CREATE INDEX change_old_key_idx ON pgrpl.change
    (sub_id, pgrpl.key_hash(schema_name, table_name, old_key))
    WHERE old_key IS NOT NULL;

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
    pgrpl.worker_status()
FROM PUBLIC;
REVOKE ALL ON pgrpl.subscriptions, pgrpl.stat_subscription FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Querying the change log.
--
-- The read functions run as the extension owner (SECURITY DEFINER, with a
-- pinned search_path), so a role can be given EXECUTE on them without
-- SELECT on pgrpl.subscription, whose conninfo may hold a password.
-- EXECUTE is revoked from PUBLIC below; see README "Letting a role read".
-- ---------------------------------------------------------------------

-- A subscription's id; ERROR if there is none of that name.
CREATE FUNCTION pgrpl.subscription_id(subscription text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id integer;
BEGIN
    IF subscription IS NULL THEN
        RAISE EXCEPTION 'subscription must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT s.sub_id INTO id FROM pgrpl.subscription s WHERE s.sub_name = subscription;
    IF id IS NULL THEN
        RAISE EXCEPTION 'pgrpl subscription "%" does not exist', subscription
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN id;
END
$$;

-- 'schema.table' (identifiers may be quoted; no schema means public) split
-- into its two names, as the primary spells them.
CREATE FUNCTION pgrpl.split_relation(relation text,
                                     OUT schema_name text, OUT table_name text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    BEGIN
        parts := parse_ident(relation);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'invalid relation name "%"', relation
            USING ERRCODE = 'invalid_name',
                  HINT = 'Write it as schema.table, double-quoting names that need it.';
    END;
    IF cardinality(parts) = 1 THEN
        parts := ARRAY['public', parts[1]];
    ELSIF cardinality(parts) <> 2 THEN
        RAISE EXCEPTION 'invalid relation name "%"', relation
            USING ERRCODE = 'invalid_name',
                  HINT = 'Write it as schema.table, double-quoting names that need it.';
    END IF;
    schema_name := parts[1];
    table_name := parts[2];
END
$$;

CREATE FUNCTION pgrpl.check_max_rows(max_rows bigint)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The cursor.  Changes of transactions committed after after_lsn, in
-- (commit_lsn, seq) order; max_rows stops after the transaction that holds
-- the max_rows-th row, so a transaction is never split.  Both queries run
-- in the caller's snapshot (STABLE), and the worker commits remote
-- transactions in commit_lsn order, so what is visible is always a prefix:
-- looping with after_lsn = the last commit_lsn seen returns each change once.
CREATE FUNCTION pgrpl.changes(subscription text, after_lsn pg_lsn DEFAULT NULL,
                              max_rows bigint DEFAULT NULL, relation text DEFAULT NULL)
RETURNS TABLE (commit_lsn pg_lsn, seq integer, lsn pg_lsn, xid bigint,
               commit_time timestamptz, op text, schema_name text, table_name text,
               old jsonb, new jsonb, unchanged text[], message_prefix text,
               message_content bytea, origin text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Both sides are LSN ranges: merge or hash them.  A nested loop chosen on
-- stale statistics would scan pgrpl.transaction once per change.  The open
-- upper bound makes the estimate large enough to trigger JIT, which costs
-- ten times the query itself (benchmark: 15.7 ms vs 1.6 ms for 1000 rows).
SET enable_nestloop = off
SET jit = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    after pg_lsn := COALESCE(after_lsn, '0/0');
    nsp text;
    rel text;
    upto pg_lsn;
BEGIN
    PERFORM pgrpl.check_max_rows(max_rows);
    IF relation IS NOT NULL THEN
        SELECT r.schema_name, r.table_name INTO nsp, rel FROM pgrpl.split_relation(relation) r;
    END IF;
    IF max_rows IS NOT NULL THEN
        SELECT c.commit_lsn INTO upto
          FROM pgrpl.change c
         WHERE c.sub_id = sid AND c.commit_lsn > after
           AND (rel IS NULL OR (c.schema_name = nsp AND c.table_name = rel))
         ORDER BY c.commit_lsn, c.seq
        OFFSET max_rows - 1 LIMIT 1;
    END IF;
    upto := COALESCE(upto, 'FFFFFFFF/FFFFFFFF');
    -- The same range on both tables: two ordered index range scans, merged.
    RETURN QUERY
    SELECT c.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
           CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                     WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE'
                     WHEN 'M' THEN 'MESSAGE' END,
           c.schema_name, c.table_name, c.old, c.new, c.unchanged,
           c.message_prefix, c.message_content, t.origin
      FROM pgrpl.change c
      LEFT JOIN pgrpl.transaction t
             ON t.sub_id = c.sub_id AND t.commit_lsn = c.commit_lsn
            AND t.commit_lsn > after AND t.commit_lsn <= upto
     WHERE c.sub_id = sid AND c.commit_lsn > after AND c.commit_lsn <= upto
       AND (rel IS NULL OR (c.schema_name = nsp AND c.table_name = rel))
     ORDER BY c.commit_lsn, c.seq;
END
$$;

-- Captured transactions after after_lsn (non-transactional messages have
-- none), at most max_rows of them.
CREATE FUNCTION pgrpl.transactions(subscription text, after_lsn pg_lsn DEFAULT NULL,
                                   max_rows bigint DEFAULT NULL)
RETURNS TABLE (commit_lsn pg_lsn, end_lsn pg_lsn, xid bigint,
               commit_time timestamptz, origin text, changes integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
BEGIN
    PERFORM pgrpl.check_max_rows(max_rows);
    RETURN QUERY
    SELECT t.commit_lsn, t.end_lsn, t.xid, t.commit_time, t.origin, t.changes
      FROM pgrpl.transaction t
     WHERE t.sub_id = sid AND t.commit_lsn > COALESCE(after_lsn, '0/0')
     ORDER BY t.commit_lsn
     LIMIT max_rows;
END
$$;

-- Every change of the row whose replica identity is key, oldest first.
-- Keys the row had before or after an UPDATE that changed its key are
-- followed both ways (old_key links them), each looked up by key_hash.
CREATE FUNCTION pgrpl.row_history(subscription text, relation text, key jsonb)
RETURNS TABLE (commit_lsn pg_lsn, seq integer, lsn pg_lsn, xid bigint,
               commit_time timestamptz, op text, old jsonb, new jsonb,
               unchanged text[], row_key jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    nsp text;
    rel text;
    keys jsonb[];
    i integer := 1;
    k jsonb;
    other jsonb;
BEGIN
    SELECT r.schema_name, r.table_name INTO nsp, rel FROM pgrpl.split_relation(relation) r;
    IF key IS NULL OR jsonb_typeof(key) <> 'object' THEN
        RAISE EXCEPTION 'key must be a JSON object of replica identity columns'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{"id": 42}''.';
    END IF;
    -- Close the key set under key changes: UPDATEs into k (old_key is
    -- where the row came from) and UPDATEs out of k (row_key is where it
    -- went).  Each lookup is an equality on one index.
    keys := ARRAY[key];
    WHILE i <= cardinality(keys) LOOP
        k := keys[i];
        FOR other IN
            SELECT c.old_key FROM pgrpl.change c
             WHERE c.sub_id = sid AND c.key_hash = pgrpl.key_hash(nsp, rel, k)
               AND c.row_key = k AND c.old_key IS NOT NULL
               AND c.schema_name = nsp AND c.table_name = rel
            UNION ALL
            SELECT c.row_key FROM pgrpl.change c
             WHERE c.sub_id = sid AND c.old_key IS NOT NULL
               AND pgrpl.key_hash(c.schema_name, c.table_name, c.old_key)
                   = pgrpl.key_hash(nsp, rel, k)
               AND c.old_key = k AND c.schema_name = nsp AND c.table_name = rel
        LOOP
            IF other IS NOT NULL AND NOT other = ANY (keys) THEN
                keys := keys || other;
            END IF;
        END LOOP;
        i := i + 1;
    END LOOP;

    -- A key change has its new key as row_key, which is in the set too.
    RETURN QUERY
    SELECT c.commit_lsn, c.seq, c.lsn, t.xid, t.commit_time,
           CASE c.op WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE'
                     WHEN 'D' THEN 'DELETE' END,
           c.old, c.new, c.unchanged, c.row_key
      FROM unnest(keys) AS ks(kv)
      JOIN pgrpl.change c
        ON c.sub_id = sid AND c.key_hash = pgrpl.key_hash(nsp, rel, ks.kv)
       AND c.row_key = ks.kv AND c.schema_name = nsp AND c.table_name = rel
      LEFT JOIN pgrpl.transaction t
             ON t.sub_id = c.sub_id AND t.commit_lsn = c.commit_lsn
     ORDER BY c.commit_lsn, c.seq;
END
$$;

-- The values of a row's unchanged TOASTed columns as of just before
-- (lsn, seq): walk the row's earlier changes back, through key changes,
-- until each column is seen; a column never seen stays absent.
CREATE FUNCTION pgrpl.fill_unchanged(sid integer, nsp text, rel text, key jsonb,
                                     at_lsn pg_lsn, at_seq integer,
                                     val jsonb, cols text[])
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    col text;
    missing text[] := cols;
BEGIN
    -- The change itself may be the one that gave the row this key.
    SELECT COALESCE(ch.old_key, key) INTO key FROM pgrpl.change ch
     WHERE ch.sub_id = sid AND ch.commit_lsn = at_lsn AND ch.seq = at_seq;
    WHILE cardinality(missing) > 0 AND key IS NOT NULL LOOP
        SELECT ch.commit_lsn, ch.seq, ch.op, ch.old, ch.new, ch.old_key INTO c
          FROM pgrpl.change ch
         WHERE ch.sub_id = sid AND ch.key_hash = pgrpl.key_hash(nsp, rel, key)
           AND ch.row_key = key AND ch.schema_name = nsp AND ch.table_name = rel
           AND (ch.commit_lsn, ch.seq) < (at_lsn, at_seq)
         ORDER BY ch.commit_lsn DESC, ch.seq DESC
         LIMIT 1;
        -- Nothing earlier, or an earlier incarnation of the key: not seen.
        EXIT WHEN NOT FOUND OR c.op NOT IN ('I', 'U');
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
-- and the last TRUNCATE starts from empty.
CREATE FUNCTION pgrpl.table_as_of(subscription text, relation text,
                                  as_of pg_lsn DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    nsp text;
    rel text;
    upto pg_lsn := COALESCE(as_of, 'FFFFFFFF/FFFFFFFF');
    t_lsn pg_lsn := '0/0';
    t_seq integer := 0;
    r record;
BEGIN
    SELECT s.schema_name, s.table_name INTO nsp, rel FROM pgrpl.split_relation(relation) s;
    IF EXISTS (SELECT 1 FROM pgrpl.change c
                WHERE c.sub_id = sid AND c.schema_name = nsp AND c.table_name = rel
                  AND c.op IN ('I', 'U', 'D') AND c.row_key IS NULL
                  AND c.commit_lsn <= upto) THEN
        RAISE EXCEPTION 'cannot rebuild relation "%"."%" from the change log', nsp, rel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its changes were captured without a replica identity key.',
                  HINT = 'Give the table a primary key or set REPLICA IDENTITY FULL (or USING INDEX) on the primary.';
    END IF;
    SELECT c.commit_lsn, c.seq INTO t_lsn, t_seq
      FROM pgrpl.change c
     WHERE c.sub_id = sid AND c.schema_name = nsp AND c.table_name = rel
       AND c.op = 'T' AND c.commit_lsn <= upto
     ORDER BY c.commit_lsn DESC, c.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        t_lsn := '0/0';
        t_seq := 0;
    END IF;

    FOR r IN
        WITH ch AS (
            SELECT c.commit_lsn, c.seq, c.op, c.row_key AS k, c.new, c.unchanged
              FROM pgrpl.change c
             WHERE c.sub_id = sid AND c.schema_name = nsp AND c.table_name = rel
               AND c.op IN ('I', 'U', 'D') AND c.commit_lsn <= upto
               AND (c.commit_lsn, c.seq) > (t_lsn, t_seq)
            UNION ALL
            SELECT c.commit_lsn, c.seq, 'D', c.old_key, NULL, NULL
              FROM pgrpl.change c
             WHERE c.sub_id = sid AND c.schema_name = nsp AND c.table_name = rel
               AND c.old_key IS NOT NULL AND c.commit_lsn <= upto
               AND (c.commit_lsn, c.seq) > (t_lsn, t_seq)
        )
        SELECT DISTINCT ON (ch.k) ch.*
          FROM ch
         ORDER BY ch.k, ch.commit_lsn DESC, ch.seq DESC
    LOOP
        CONTINUE WHEN r.op = 'D';
        IF r.unchanged IS NULL THEN
            RETURN NEXT r.new;
        ELSE
            RETURN NEXT pgrpl.fill_unchanged(sid, nsp, rel, r.k, r.commit_lsn, r.seq,
                                             r.new, r.unchanged);
        END IF;
    END LOOP;
END
$$;

-- As of a commit time: the last transaction committed at or before it.
CREATE FUNCTION pgrpl.table_as_of(subscription text, relation text,
                                  as_of timestamptz)
RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgrpl.table_as_of(subscription, relation,
        COALESCE((SELECT max(t.commit_lsn) FROM pgrpl.transaction t
                   WHERE t.sub_id = pgrpl.subscription_id(subscription)
                     AND t.commit_time <= as_of),
                 CASE WHEN as_of IS NULL THEN NULL ELSE '0/0'::pg_lsn END))
$$;

-- Delete whole transactions with commit_lsn < before_lsn; returns the
-- number of change rows removed.  table_as_of() only knows rows whose
-- changes are still in the log: purging forgets rows not changed since.
CREATE FUNCTION pgrpl.purge(subscription text, before_lsn pg_lsn)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    n bigint;
BEGIN
    IF before_lsn IS NULL THEN
        RAISE EXCEPTION 'before_lsn must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM pgrpl.change c WHERE c.sub_id = sid AND c.commit_lsn < before_lsn;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM pgrpl.transaction t WHERE t.sub_id = sid AND t.commit_lsn < before_lsn;
    RETURN n;
END
$$;

-- By commit time: everything before the first transaction committed at or
-- after before_time (a prefix of the log, like the LSN form).
CREATE FUNCTION pgrpl.purge(subscription text, before_time timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    bound pg_lsn;
BEGIN
    IF before_time IS NULL THEN
        RAISE EXCEPTION 'before_time must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT min(t.commit_lsn) INTO bound FROM pgrpl.transaction t
     WHERE t.sub_id = sid AND t.commit_time >= before_time;
    IF bound IS NULL THEN
        -- Nothing committed since: the whole log is older.
        SELECT max(c.commit_lsn) + 1 INTO bound FROM pgrpl.change c WHERE c.sub_id = sid;
        IF bound IS NULL THEN
            RETURN 0;
        END IF;
    END IF;
    RETURN pgrpl.purge(subscription, bound);
END
$$;

-- One pgoutput message (the payload of a CopyData 'w') described as jsonb.
CREATE FUNCTION pgrpl.decode(message bytea)
RETURNS jsonb
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgrpl_decode_sql';

REVOKE ALL ON FUNCTION
    pgrpl.subscription_id(text),
    pgrpl.changes(text, pg_lsn, bigint, text),
    pgrpl.transactions(text, pg_lsn, bigint),
    pgrpl.row_history(text, text, jsonb),
    pgrpl.fill_unchanged(integer, text, text, jsonb, pg_lsn, integer, jsonb, text[]),
    pgrpl.table_as_of(text, text, pg_lsn),
    pgrpl.table_as_of(text, text, timestamptz),
    pgrpl.purge(text, pg_lsn),
    pgrpl.purge(text, timestamptz)
FROM PUBLIC;
