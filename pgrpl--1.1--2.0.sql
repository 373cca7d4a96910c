/* pgrpl--1.1--2.0.sql: from pgrpl 1.1 to 2.0 (a new install runs 1.0, 1.1, then this) */

\echo Use "ALTER EXTENSION pgrpl UPDATE TO '2.0'" to load this file. \quit

-- Storage 2.0.
--
--  * pgrpl.relation: every version of every remote relation a subscription
--    has seen.  Changes refer to it by rel_id instead of repeating names.
--  * pgrpl.transaction gets a txn_id, assigned by the worker when a remote
--    transaction starts.  Changes carry the txn_id, not the commit LSN, so
--    they can be written before their commit position is known; a change is
--    visible only when its transaction row has a commit_lsn (state 'c': a
--    committed transaction, 'm': a non-transactional message).  Rows of a
--    transaction that never commits are never visible.
--  * Both tables are partitioned: by subscription (LIST on sub_id), and each
--    subscription's by ranges of txn_id (2^32 ids each).  The worker starts a
--    new range when the current one holds pgrpl.partition_size changes.
--    purge() and retention drop whole partitions; drop_subscription() drops
--    the subscription's tables.
--  * The lookup key no longer mixes in the relation (rel_id leads the index):
--    pgrpl.row_key_hash(key), C symbol pgrpl_row_key_hash_v2.  A function
--    whose result changes gets a new symbol: the 1.x key_hash keeps its own.
--
-- Captured data is migrated: relation versions are rebuilt from the names
-- and JSON keys of the 1.1 rows (column types were not recorded in 1.1 and
-- show as "unknown"), transactions get txn_ids in commit order, and each
-- non-transactional message becomes a unit of its own, as 2.0 writes them.

ALTER TABLE pgrpl.subscription ADD COLUMN retention interval;
ALTER TABLE pgrpl.subscription ADD CONSTRAINT subscription_retention_check
    CHECK (retention > interval '0');

CREATE TABLE pgrpl.relation (
    rel_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sub_id          integer NOT NULL REFERENCES pgrpl.subscription ON DELETE CASCADE,
    remote_oid      oid NOT NULL,
    schema_name     text NOT NULL,
    table_name      text NOT NULL,
    replica_identity "char",    -- d, f, i, n as pg_class.relreplident; NULL if unknown
    columns         text[] NOT NULL,
    column_types    text[] NOT NULL,
    key_columns     text[] NOT NULL,
    first_lsn       pg_lsn NOT NULL
);
CREATE INDEX relation_name_idx ON pgrpl.relation (sub_id, schema_name, table_name);
CREATE INDEX relation_oid_idx ON pgrpl.relation (sub_id, remote_oid);

ALTER TABLE pgrpl.change RENAME TO change_1_1;
ALTER TABLE pgrpl.transaction RENAME TO transaction_1_1;
ALTER INDEX pgrpl.change_pkey RENAME TO change_1_1_pkey;
ALTER INDEX pgrpl.transaction_pkey RENAME TO transaction_1_1_pkey;

-- One row per captured remote transaction (state 'c') or non-transactional
-- message (state 'm', no xid).  commit_lsn is NULL until the transaction
-- commits here; end_lsn is where streaming restarts after it.
CREATE TABLE pgrpl.transaction (
    sub_id       integer NOT NULL,
    changes      integer NOT NULL,
    txn_id       bigint NOT NULL,
    commit_lsn   pg_lsn,
    end_lsn      pg_lsn,
    xid          bigint,
    commit_time  timestamptz,
    origin_lsn   pg_lsn,
    state        "char" NOT NULL,
    origin       text
) PARTITION BY LIST (sub_id);

-- One row per captured change, cursor order (commit_lsn of its transaction,
-- seq).  row_key is the replica identity after the change; key_hash =
-- pgrpl.row_key_hash(row_key); old_key is set by an UPDATE that changed the
-- key.  Fixed-width columns first: no padding between them.
CREATE TABLE pgrpl.change (
    sub_id          integer NOT NULL,
    seq             integer NOT NULL,
    txn_id          bigint NOT NULL,
    lsn             pg_lsn NOT NULL,
    key_hash        bigint,
    rel_id          integer,
    op              "char" NOT NULL,
    unchanged       text[],
    row_key         jsonb,
    old_key         jsonb,
    old             jsonb,
    new             jsonb,
    message_prefix  text,
    message_content bytea
) PARTITION BY LIST (sub_id);

-- Large values compress with lz4 where the server has it (see 1.1).
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
    NULL;
END
$$;

REVOKE ALL ON pgrpl.relation, pgrpl.transaction, pgrpl.change FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('pgrpl.relation', '');

-- Row lookup key of a replica identity key (2.0 contract): a key of one
-- integral number within the int8 range is that number (keys of a table
-- with an ascending key stay in order in the index), any other key is
-- jsonb's extended hash.  Not unique: queries also compare row_key.
CREATE FUNCTION pgrpl.row_key_hash(key jsonb)
RETURNS bigint
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgrpl_row_key_hash_v2';

-- The storage layout version the library writes; the worker refuses to
-- write into another one.
CREATE FUNCTION pgrpl.storage_version()
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'SELECT 2';

-- Create (if missing) the partition of subscription sid that holds txn_ids
-- [part << 32, (part + 1) << 32), and the subscription's own partitioned
-- tables above it.  Tables are created first and attached afterwards:
-- ATTACH PARTITION needs only SHARE UPDATE EXCLUSIVE on the parent, so
-- readers of the log are never blocked by the worker starting a partition.
CREATE FUNCTION pgrpl.ensure_partition(sid integer, part bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo bigint := part << 32;
    hi bigint := (part + 1) << 32;
    tab text;
BEGIN
    IF part < 0 OR part >= (1::bigint << 31) - 1 THEN
        RAISE EXCEPTION 'partition number % is out of range', part
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    FOREACH tab IN ARRAY ARRAY['change', 'transaction'] LOOP
        IF to_regclass(format('pgrpl.%I', tab || '_' || sid)) IS NULL THEN
            EXECUTE format('CREATE TABLE pgrpl.%I (LIKE pgrpl.%I INCLUDING ALL) PARTITION BY RANGE (txn_id)',
                           tab || '_' || sid, tab);
            IF tab = 'change' THEN
                EXECUTE format('ALTER TABLE pgrpl.%I ADD PRIMARY KEY (txn_id, seq)', tab || '_' || sid);
                -- row_history, table_as_of, changes(relation => ...): per relation
                EXECUTE format('CREATE INDEX ON pgrpl.%I (rel_id, key_hash)', tab || '_' || sid);
                EXECUTE format('CREATE INDEX ON pgrpl.%I (rel_id, pgrpl.row_key_hash(old_key)) WHERE old_key IS NOT NULL',
                               tab || '_' || sid);
                EXECUTE format('CREATE INDEX ON pgrpl.%I (rel_id) WHERE op = ''T''', tab || '_' || sid);
            ELSE
                EXECUTE format('ALTER TABLE pgrpl.%I ADD PRIMARY KEY (txn_id)', tab || '_' || sid);
                EXECUTE format('CREATE INDEX ON pgrpl.%I (commit_lsn)', tab || '_' || sid);
            END IF;
            EXECUTE format('ALTER TABLE pgrpl.%I ATTACH PARTITION pgrpl.%I FOR VALUES IN (%s)',
                           tab, tab || '_' || sid, sid);
        END IF;
        IF to_regclass(format('pgrpl.%I', tab || '_' || sid || '_' || part)) IS NULL THEN
            EXECUTE format('CREATE TABLE pgrpl.%I (LIKE pgrpl.%I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                           tab || '_' || sid || '_' || part, tab || '_' || sid);
            -- Implied constraints let ATTACH skip its validating scan.
            EXECUTE format('ALTER TABLE pgrpl.%I ADD CONSTRAINT %I CHECK (sub_id IS NOT NULL AND sub_id = %s AND txn_id IS NOT NULL AND txn_id >= %s AND txn_id < %s)',
                           tab || '_' || sid || '_' || part, tab || '_' || sid || '_' || part || '_range',
                           sid, lo, hi);
            EXECUTE format('ALTER TABLE pgrpl.%I ATTACH PARTITION pgrpl.%I FOR VALUES FROM (%s) TO (%s)',
                           tab || '_' || sid, tab || '_' || sid || '_' || part, lo, hi);
        END IF;
    END LOOP;
END
$$;

-- Drop a subscription's captured data: its tables, not row by row.
CREATE FUNCTION pgrpl.drop_log(sid integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass(format('pgrpl.%I', 'change_' || sid)) IS NOT NULL THEN
        EXECUTE format('DROP TABLE pgrpl.%I', 'change_' || sid);
    END IF;
    IF to_regclass(format('pgrpl.%I', 'transaction_' || sid)) IS NOT NULL THEN
        EXECUTE format('DROP TABLE pgrpl.%I', 'transaction_' || sid);
    END IF;
    DELETE FROM pgrpl.relation r WHERE r.sub_id = sid;
END
$$;

-- ---------------------------------------------------------------------
-- Migration of 1.1 data
-- ---------------------------------------------------------------------

-- Relation versions as far as 1.1 rows tell: one per (schema, table), its
-- columns and key columns from the JSON keys seen; types unknown.
INSERT INTO pgrpl.relation (sub_id, remote_oid, schema_name, table_name,
                            replica_identity, columns, column_types,
                            key_columns, first_lsn)
SELECT r.sub_id, 0, r.schema_name, r.table_name, NULL, r.cols,
       array_fill('unknown'::text, ARRAY[cardinality(r.cols)]),
       CASE WHEN r.keyless THEN '{}'::text[] ELSE r.keys END, r.first_lsn
  FROM (SELECT c.sub_id, c.schema_name, c.table_name, min(c.commit_lsn) AS first_lsn,
               bool_or(c.op IN ('I', 'U', 'D') AND c.row_key IS NULL) AS keyless,
               COALESCE((SELECT array_agg(DISTINCT k ORDER BY k)
                           FROM pgrpl.change_1_1 c2,
                                LATERAL jsonb_object_keys(COALESCE(c2.new, c2.old)) AS k
                          WHERE c2.sub_id = c.sub_id AND c2.schema_name = c.schema_name
                            AND c2.table_name = c.table_name
                            AND COALESCE(c2.new, c2.old) IS NOT NULL), '{}') AS cols,
               COALESCE((SELECT array_agg(DISTINCT k ORDER BY k)
                           FROM pgrpl.change_1_1 c3,
                                LATERAL jsonb_object_keys(c3.row_key) AS k
                          WHERE c3.sub_id = c.sub_id AND c3.schema_name = c.schema_name
                            AND c3.table_name = c.table_name
                            AND c3.row_key IS NOT NULL), '{}') AS keys
          FROM pgrpl.change_1_1 c
         WHERE c.schema_name IS NOT NULL
           AND EXISTS (SELECT FROM pgrpl.subscription s WHERE s.sub_id = c.sub_id)
         GROUP BY c.sub_id, c.schema_name, c.table_name) r
 ORDER BY r.sub_id, r.first_lsn;

-- Units in commit order: transactions, and messages (no transaction row).
CREATE TEMPORARY TABLE pgrpl_units ON COMMIT DROP AS
SELECT u.sub_id, u.commit_lsn, u.is_txn,
       row_number() OVER (PARTITION BY u.sub_id ORDER BY u.commit_lsn) AS txn_id
  FROM (SELECT t.sub_id, t.commit_lsn, true AS is_txn FROM pgrpl.transaction_1_1 t
        UNION ALL
        SELECT DISTINCT c.sub_id, c.commit_lsn, false FROM pgrpl.change_1_1 c
         WHERE NOT EXISTS (SELECT FROM pgrpl.transaction_1_1 t
                            WHERE t.sub_id = c.sub_id AND t.commit_lsn = c.commit_lsn)) u
 WHERE EXISTS (SELECT FROM pgrpl.subscription s WHERE s.sub_id = u.sub_id);

-- Partitions belong to their subscription, not to the extension: created
-- here (in the extension's script) they would become members of it, which
-- drop_subscription() and purge() could not drop.
DO $$
DECLARE
    sid integer;
    tab text;
BEGIN
    FOR sid IN SELECT s.sub_id FROM pgrpl.subscription s LOOP
        PERFORM pgrpl.ensure_partition(sid, 0);
        FOREACH tab IN ARRAY ARRAY['change_' || sid, 'transaction_' || sid,
                                   'change_' || sid || '_0', 'transaction_' || sid || '_0'] LOOP
            EXECUTE format('ALTER EXTENSION pgrpl DROP TABLE pgrpl.%I', tab);
        END LOOP;
    END LOOP;
END
$$;

INSERT INTO pgrpl.transaction (sub_id, changes, txn_id, commit_lsn, end_lsn, xid,
                               commit_time, origin_lsn, state, origin)
SELECT u.sub_id, COALESCE(t.changes, 1), u.txn_id, u.commit_lsn,
       COALESCE(t.end_lsn, u.commit_lsn + 1), t.xid, t.commit_time, t.origin_lsn,
       CASE WHEN u.is_txn THEN 'c' ELSE 'm' END, t.origin
  FROM pgrpl_units u
  LEFT JOIN pgrpl.transaction_1_1 t ON u.is_txn AND t.sub_id = u.sub_id AND t.commit_lsn = u.commit_lsn;

INSERT INTO pgrpl.change (sub_id, seq, txn_id, lsn, key_hash, rel_id, op, unchanged,
                          row_key, old_key, old, new, message_prefix, message_content)
SELECT c.sub_id, c.seq, u.txn_id, c.lsn,
       CASE WHEN c.row_key IS NOT NULL THEN pgrpl.row_key_hash(c.row_key) END,
       r.rel_id, c.op, c.unchanged, c.row_key, c.old_key, c.old, c.new,
       c.message_prefix, c.message_content
  FROM pgrpl.change_1_1 c
  JOIN pgrpl_units u ON u.sub_id = c.sub_id AND u.commit_lsn = c.commit_lsn
  LEFT JOIN pgrpl.relation r ON r.sub_id = c.sub_id AND r.schema_name = c.schema_name
                            AND r.table_name = c.table_name;

DROP TABLE pgrpl_units;
DROP TABLE pgrpl.change_1_1, pgrpl.transaction_1_1;
DROP FUNCTION pgrpl.key_hash(text, text, jsonb);

-- ---------------------------------------------------------------------
-- Management functions with new arguments
-- ---------------------------------------------------------------------

DROP FUNCTION pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn);
CREATE FUNCTION pgrpl.create_subscription(
    name text,
    conninfo text,
    publications text[],
    slot_name text DEFAULT NULL,
    create_slot boolean DEFAULT true,
    enabled boolean DEFAULT true,
    stop_lsn pg_lsn DEFAULT NULL,
    retention interval DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_create_subscription';

-- retention: NULL keeps it; use set_retention to remove it.
DROP FUNCTION pgrpl.alter_subscription(text, text, text[]);
CREATE FUNCTION pgrpl.alter_subscription(
    name text,
    conninfo text DEFAULT NULL,
    publications text[] DEFAULT NULL,
    retention interval DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_alter_subscription';

-- Set or (with NULL) remove a subscription's retention.
CREATE FUNCTION pgrpl.set_retention(name text, retention interval)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_set_retention';

REVOKE ALL ON FUNCTION
    pgrpl.create_subscription(text, text, text[], text, boolean, boolean, pg_lsn, interval),
    pgrpl.alter_subscription(text, text, text[], interval),
    pgrpl.set_retention(text, interval),
    pgrpl.ensure_partition(integer, bigint),
    pgrpl.drop_log(integer)
FROM PUBLIC;

CREATE OR REPLACE VIEW pgrpl.subscriptions AS
SELECT s.sub_name AS name, s.enabled, s.slot_name, s.publications,
       pgrpl.mask_conninfo(s.conninfo) AS conninfo, s.stop_lsn, s.created_at,
       s.retention
  FROM pgrpl.subscription s;

-- ---------------------------------------------------------------------
-- Read functions
-- ---------------------------------------------------------------------

-- Every version of the relation 'schema.table' the subscription has seen.
CREATE FUNCTION pgrpl.relation_ids(sid integer, relation text)
RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(array_agg(r.rel_id), '{}')
      FROM pgrpl.split_relation(relation) n
      JOIN pgrpl.relation r ON r.sub_id = sid AND r.schema_name = n.schema_name
                           AND r.table_name = n.table_name
$$;

-- The schema history of the primary as the stream showed it: one row per
-- version of each relation (a column added or dropped, a new key, a
-- rename or a recreated table is a new version), oldest first.
CREATE FUNCTION pgrpl.relations(subscription text)
RETURNS TABLE (rel_id integer, schema_name text, table_name text,
               remote_oid oid, replica_identity text, columns text[],
               column_types text[], key_columns text[], first_lsn pg_lsn)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rel_id, r.schema_name, r.table_name, r.remote_oid,
           CASE r.replica_identity WHEN 'd' THEN 'default' WHEN 'f' THEN 'full'
                WHEN 'i' THEN 'index' WHEN 'n' THEN 'nothing' END,
           r.columns, r.column_types, r.key_columns, r.first_lsn
      FROM pgrpl.relation r
     WHERE r.sub_id = pgrpl.subscription_id(subscription)
     ORDER BY r.first_lsn, r.rel_id
$$;

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
                         WHEN 'M' THEN 'MESSAGE' END,
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
                     WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE' END,
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

-- Captured transactions after after_lsn (non-transactional messages are
-- not transactions), at most max_rows of them.
CREATE OR REPLACE FUNCTION pgrpl.transactions(subscription text, after_lsn pg_lsn DEFAULT NULL,
                                              max_rows bigint DEFAULT NULL)
RETURNS TABLE (commit_lsn pg_lsn, end_lsn pg_lsn, xid bigint,
               commit_time timestamptz, origin text, changes integer)
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
BEGIN
    PERFORM pgrpl.check_max_rows(max_rows);
    RETURN QUERY
    SELECT t.commit_lsn, t.end_lsn, t.xid, t.commit_time, t.origin, t.changes
      FROM pgrpl.transaction t
     WHERE t.sub_id = sid AND t.commit_lsn > COALESCE(after_lsn, '0/0')
       AND t.state = 'c'
     ORDER BY t.commit_lsn
     LIMIT max_rows;
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
                     WHEN 'D' THEN 'DELETE' END,
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
DROP FUNCTION pgrpl.fill_unchanged(integer, text, text, jsonb, pg_lsn, integer, jsonb, text[]);
CREATE FUNCTION pgrpl.fill_unchanged(sid integer, rels integer[], key jsonb,
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
              AND c.op IN ('I', 'U', 'D') AND c.row_key IS NULL
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
              FROM live l WHERE l.op IN ('I', 'U', 'D')
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

-- As of a commit time: the last transaction committed at or before it.
CREATE OR REPLACE FUNCTION pgrpl.table_as_of(subscription text, relation text,
                                             as_of timestamptz)
RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgrpl.table_as_of(subscription, relation,
        COALESCE((SELECT max(t.commit_lsn) FROM pgrpl.transaction t
                   WHERE t.sub_id = pgrpl.subscription_id(subscription)
                     AND t.state = 'c' AND t.commit_time <= as_of),
                 CASE WHEN as_of IS NULL THEN NULL ELSE '0/0'::pg_lsn END))
$$;

-- Remove whole transactions with commit_lsn < before_lsn; returns the
-- number of change rows removed.  A partition holding nothing newer (and no
-- transaction still in progress) is dropped with its changes; in the one
-- that straddles the bound the transaction rows are deleted, which hides
-- their changes at once; their space returns when a later purge drops that
-- partition.  table_as_of() only knows rows whose changes are still in the
-- log: purging forgets rows not changed since.
CREATE OR REPLACE FUNCTION pgrpl.purge(subscription text, before_lsn pg_lsn)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid integer := pgrpl.subscription_id(subscription);
    n bigint := 0;
    m bigint;
    part record;
    keep boolean;
BEGIN
    IF before_lsn IS NULL THEN
        RAISE EXCEPTION 'before_lsn must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF to_regclass(format('pgrpl.%I', 'transaction_' || sid)) IS NULL THEN
        RETURN 0;
    END IF;
    FOR part IN
        SELECT i.inhrelid::regclass AS txn_part,
               substr(c.relname, length('transaction_' || sid) + 2) AS part_no
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = format('pgrpl.%I', 'transaction_' || sid)::regclass
         ORDER BY 2::bigint
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s t WHERE t.commit_lsn >= $1)
                            OR EXISTS (SELECT 1 FROM %s t WHERE t.commit_lsn IS NULL AND t.state <> ''a'')',
                       part.txn_part, part.txn_part)
           INTO keep USING before_lsn;
        IF NOT keep THEN
            EXECUTE format('SELECT COALESCE(sum(t.changes), 0) FROM %s t WHERE t.commit_lsn IS NOT NULL',
                           part.txn_part) INTO m;
            EXECUTE format('DROP TABLE pgrpl.%I, %s',
                           'change_' || sid || '_' || part.part_no, part.txn_part);
        ELSE
            EXECUTE format('WITH d AS (DELETE FROM %s t WHERE t.commit_lsn < $1 RETURNING t.changes)
                            SELECT COALESCE(sum(d.changes), 0) FROM d', part.txn_part)
               INTO m USING before_lsn;
        END IF;
        n := n + m;
    END LOOP;
    RETURN n;
END
$$;

-- By commit time: everything before the first transaction committed at or
-- after before_time (a prefix of the log, like the LSN form).
CREATE OR REPLACE FUNCTION pgrpl.purge(subscription text, before_time timestamptz)
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
     WHERE t.sub_id = sid AND t.state = 'c' AND t.commit_time >= before_time;
    IF bound IS NULL THEN
        -- Nothing committed since: the whole log is older.
        SELECT max(t.commit_lsn) + 1 INTO bound FROM pgrpl.transaction t
         WHERE t.sub_id = sid;
        IF bound IS NULL THEN
            RETURN 0;
        END IF;
    END IF;
    RETURN pgrpl.purge(subscription, bound);
END
$$;

-- What the worker runs for a subscription with a retention: purge what
-- committed longer ago than that.  A purge that would wait for a lock
-- (a long reader of the log) is skipped and tried again later.
CREATE FUNCTION pgrpl.apply_retention(sid integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    s record;
BEGIN
    SELECT sub.sub_name, sub.retention INTO s FROM pgrpl.subscription sub WHERE sub.sub_id = sid;
    IF s.retention IS NULL THEN
        RETURN 0;
    END IF;
    RETURN pgrpl.purge(s.sub_name, now() - s.retention);
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END
$$;

-- What a subscription would record for these pgoutput messages (CopyData
-- 'w' payloads in stream order, each received at the matching LSN): the
-- worker's decoder and capture module with a sink that returns the rows
-- (kind relation, change or transaction) instead of writing them.
CREATE FUNCTION pgrpl.capture_preview(messages bytea[], lsns pg_lsn[] DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'pgrpl_capture_preview';

REVOKE ALL ON FUNCTION
    pgrpl.relation_ids(integer, text),
    pgrpl.relations(text),
    pgrpl.fill_unchanged(integer, integer[], jsonb, pg_lsn, integer, jsonb, jsonb, text[]),
    pgrpl.apply_retention(integer)
FROM PUBLIC;
