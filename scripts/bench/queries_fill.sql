-- scripts/bench/queries_fill.sql: a synthetic change log for the query
-- figures, written straight into the storage 2.0 tables as the worker
-- would have written it.  psql variables: sid (the subscription), nrows
-- (changes of public.t), keys (distinct row keys of public.t; nrows / keys
-- passes over them) and small (changes of public.small, 3 per row).
--
-- public.t: changes come 4 to a transaction, in commit LSN order.  Pass 0
-- over the keys inserts each row, the last pass deletes it, the passes
-- between update it (default replica identity: no old tuple for an UPDATE
-- that keeps the key), so every key has nrows / keys changes spread over
-- the whole log.  Every 10000th transaction also has an UPDATE that changed
-- a row's key (old_key set: the partial index is not empty).
--
-- public.small: a relation of its own, small / 3 rows; its changes (one
-- INSERT and two UPDATEs per row, the INSERTs first) are spread evenly over
-- the transactions of the log, one more change in each of small of them,
-- so the relation's changes sit in every partition.
--
-- Transactions get txn_ids and partitions as pgrpl_writer_new_txn_id()
-- hands them out: ids from 0 up, and a transaction that starts when the
-- current partition holds pgrpl.partition_size changes or more opens the
-- next one, at id (part + 1) << 32.  Each partition is created with
-- pgrpl.ensure_partition() and written directly, one transaction each.
\set ON_ERROR_STOP 1

INSERT INTO pgrpl.relation (sub_id, remote_oid, schema_name, table_name, replica_identity,
                            columns, column_types, key_columns, first_lsn)
VALUES (:sid, 16401, 'public', 't', 'd',
        '{id,owner,balance,status,note,updated_at}',
        '{integer,text,numeric,text,text,"timestamp with time zone"}', '{id}', '1/100')
RETURNING rel_id AS rel_t \gset
INSERT INTO pgrpl.relation (sub_id, remote_oid, schema_name, table_name, replica_identity,
                            columns, column_types, key_columns, first_lsn)
VALUES (:sid, 16411, 'public', 'small', 'd', '{id,v,n}', '{integer,text,integer}', '{id}', '1/100')
RETURNING rel_id AS rel_s \gset

CREATE OR REPLACE PROCEDURE public.bench_fill_log(sid integer, rel_t integer, rel_s integer,
                                                  nrows bigint, keys bigint, small bigint)
LANGUAGE plpgsql AS $proc$
DECLARE
    ntx bigint := (nrows + 3) / 4;
    psize bigint := current_setting('pgrpl.partition_size')::bigint;
    -- changes in transactions 1..t, as an expression of t: public.t's,
    -- the key changes (t = 10000, 20000, ...) and public.small's (change i
    -- of small is in transaction i * ntx / small + 1)
    cum text := format('(least(4 * %1$s, %2$s) + %1$s / 10000 + least(%3$s, (%1$s * %3$s + %4$s - 1) / %4$s))',
                       '$1', nrows, small, ntx);
    changes_of text := format('(%s - %s)', cum, replace(cum, '$1', '($1 - 1)'));
    part bigint := 0;
    lo bigint := 1;
    hi bigint;
    base bigint;
    a bigint;
    b bigint;
    m bigint;
    c bigint;
    leaf_c text;
    leaf_t text;
BEGIN
    IF ntx < small THEN
        RAISE EXCEPTION 'bench_fill_log: % transactions cannot hold % changes of public.small', ntx, small;
    END IF;
    WHILE lo <= ntx LOOP
        -- This partition ends with the first transaction that brings it to
        -- psize changes (binary search: cum is monotonic).
        EXECUTE format('SELECT %s', replace(cum, '$1', (lo - 1)::text)) INTO base;
        a := lo;
        b := ntx;
        WHILE a < b LOOP
            m := (a + b) / 2;
            EXECUTE format('SELECT %s', replace(cum, '$1', m::text)) INTO c;
            IF c - base >= psize THEN b := m; ELSE a := m + 1; END IF;
        END LOOP;
        hi := a;

        PERFORM pgrpl.ensure_partition(sid, part);
        leaf_c := format('pgrpl.%I', 'change_' || sid || '_' || part);
        leaf_t := format('pgrpl.%I', 'transaction_' || sid || '_' || part);
        -- txn_id of transaction t: (part << 32) + t - lo
        EXECUTE format($q$
            INSERT INTO %s (sub_id, changes, txn_id, commit_lsn, end_lsn, xid, commit_time,
                            origin_lsn, state, origin)
            SELECT %s, %s, (%s::bigint << 32) + t - %s,
                   '1/0'::pg_lsn + (t * 1024)::numeric, '1/0'::pg_lsn + (t * 1024 + 56)::numeric,
                   10000 + t, timestamptz '2024-01-01 00:00:00+00' + t * interval '10 ms',
                   NULL, 'c', NULL
              FROM generate_series(%s::bigint, %s::bigint) t$q$,
            leaf_t, sid, replace(changes_of, '$1', 't'), part, lo, lo, hi);

        -- public.t, seq 1..4; a change's lsn lies before its commit
        EXECUTE format($q$
            INSERT INTO %s (sub_id, seq, txn_id, lsn, key_hash, rel_id, op, unchanged,
                            row_key, old_key, old, new, message_prefix, message_content)
            SELECT %s, a.s, (%s::bigint << 32) + a.t - %s,
                   '1/0'::pg_lsn + (a.t * 1024 - (8 - a.s) * 128)::numeric,
                   pgrpl.row_key_hash(b.rk), %s, b.op, NULL, b.rk, NULL,
                   CASE WHEN b.op = 'D' THEN b.rk END,
                   CASE WHEN b.op <> 'D' THEN
                       jsonb_build_object('id', a.id, 'owner', 'user_' || (a.id %% 5000),
                                          'balance', round((g %% 100000) * 0.37, 2),
                                          'status', (ARRAY['new', 'active', 'closed'])[1 + g %% 3],
                                          'note', md5(g::text),
                                          'updated_at', timestamptz '2024-01-01 00:00:00+00'
                                                        + g * interval '2.5 ms')
                   END,
                   NULL, NULL
              FROM generate_series(4 * (%s::bigint - 1) + 1, least(4 * %s::bigint, %s)) g,
                   LATERAL (SELECT (g - 1) / 4 + 1 AS t, ((g - 1) %% 4 + 1)::integer AS s,
                                   (g - 1) %% %s + 1 AS id, (g - 1) / %s AS pass) a,
                   LATERAL (SELECT (CASE WHEN a.pass = 0 THEN 'I'
                                         WHEN a.pass >= %s - 1 THEN 'D'
                                         ELSE 'U' END)::"char" AS op,
                                   jsonb_build_object('id', a.id) AS rk) b$q$,
            leaf_c, sid, part, lo, rel_t, lo, hi, nrows, keys, keys, nrows / keys);

        -- key changes: in transactions 10000, 20000, ... after public.t's
        -- 4 changes, the row {"id": 2 * keys + j} became {"id": keys + j}
        EXECUTE format($q$
            INSERT INTO %s (sub_id, seq, txn_id, lsn, key_hash, rel_id, op, unchanged,
                            row_key, old_key, old, new, message_prefix, message_content)
            SELECT %s, 5, (%s::bigint << 32) + 10000 * j - %s,
                   '1/0'::pg_lsn + (10000 * j * 1024 - 3 * 128)::numeric,
                   pgrpl.row_key_hash(jsonb_build_object('id', %s + j)), %s, 'U', NULL,
                   jsonb_build_object('id', %s + j), jsonb_build_object('id', 2 * %s + j),
                   jsonb_build_object('id', 2 * %s + j),
                   jsonb_build_object('id', %s + j, 'owner', 'moved', 'balance', 0),
                   NULL, NULL
              FROM generate_series((%s::bigint + 9999) / 10000, %s::bigint / 10000) j$q$,
            leaf_c, sid, part, lo, keys, rel_t, keys, keys, keys, keys, lo, hi);

        -- public.small: change i is in transaction i * ntx / small + 1,
        -- last in it; pass 0 inserts row i %% rows + 1, later passes update it
        EXECUTE format($q$
            INSERT INTO %s (sub_id, seq, txn_id, lsn, key_hash, rel_id, op, unchanged,
                            row_key, old_key, old, new, message_prefix, message_content)
            SELECT %s, x.seq, (%s::bigint << 32) + x.t - %s,
                   '1/0'::pg_lsn + (x.t * 1024 - (8 - x.seq) * 128)::numeric,
                   pgrpl.row_key_hash(x.rk), %s, x.op, NULL, x.rk, NULL, NULL,
                   jsonb_build_object('id', x.id, 'v', md5(x.i::text), 'n', x.pass),
                   NULL, NULL
              FROM generate_series(0, %s::bigint - 1) i,
                   LATERAL (SELECT i, i * %s / %s + 1 AS t, i %% (%s / 3) + 1 AS id,
                                   i / (%s / 3) AS pass) y,
                   LATERAL (SELECT y.*, jsonb_build_object('id', y.id) AS rk,
                                   (CASE WHEN y.pass = 0 THEN 'I' ELSE 'U' END)::"char" AS op,
                                   (least(4, %s - 4 * (y.t - 1)) + (y.t %% 10000 = 0)::int + 1)::integer AS seq) x
             WHERE x.t BETWEEN %s AND %s$q$,
            leaf_c, sid, part, lo, rel_s, small, ntx, small, small, small, nrows, lo, hi);

        EXECUTE format('SELECT %s', replace(cum, '$1', hi::text)) INTO c;
        RAISE NOTICE 'partition %: transactions % to % (txn_ids from %), % changes',
            part, lo, hi, part << 32, c - base;
        COMMIT;
        part := part + 1;
        lo := hi + 1;
    END LOOP;
END
$proc$;

CALL public.bench_fill_log(:sid, :rel_t, :rel_s, :nrows, :keys, :small);
DROP PROCEDURE public.bench_fill_log(integer, integer, integer, bigint, bigint, bigint);
