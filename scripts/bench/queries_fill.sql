-- scripts/bench/queries_fill.sql: a synthetic change log for the query
-- figures.  psql variables: sid (the subscription), nrows (changes),
-- keys (distinct row keys of public.t; nrows / keys passes over them),
-- g_from / g_to (the range of changes this session writes: the script runs
-- one session per core) and extras (true in the one session that also
-- writes the transaction rows and the key changes).
--
-- Changes come 4 to a transaction, in commit LSN order.  Pass 0 over the
-- keys inserts each row, the last pass deletes it, the passes between
-- update it (default replica identity: no old tuple for an UPDATE that
-- keeps the key), so every key has nrows / keys changes spread over the
-- whole log.  Every 10000th transaction is followed by one whose UPDATE
-- changed a row's key (old_key set: the partial index is not empty).
\set ON_ERROR_STOP 1
SELECT (:nrows + 3) / 4 AS ntx, :nrows / :keys AS passes \gset

\if :extras
INSERT INTO pgrpl.transaction (sub_id, commit_lsn, end_lsn, xid, commit_time,
                               origin, origin_lsn, changes)
SELECT :sid, '1/0'::pg_lsn + t::numeric * 1024, '1/0'::pg_lsn + t::numeric * 1024 + 56, 10000 + t,
       timestamptz '2024-01-01 00:00:00+00' + t * interval '10 ms', NULL, NULL,
       least(4, :nrows - (t - 1) * 4)
  FROM generate_series(1, :ntx) t;
\endif

INSERT INTO pgrpl.change (sub_id, commit_lsn, seq, lsn, op, schema_name, table_name,
                          old, new, unchanged, message_prefix, message_content,
                          row_key, key_hash, old_key)
SELECT :sid, '1/0'::pg_lsn + a.t::numeric * 1024, a.s, '1/0'::pg_lsn + a.t::numeric * 1024 - (5 - a.s) * 200,
       b.op, 'public', 't',
       CASE WHEN b.op = 'D' THEN b.rk END,
       CASE WHEN b.op <> 'D' THEN
           jsonb_build_object('id', a.id, 'owner', 'user_' || (a.id % 5000),
                              'balance', round((g % 100000) * 0.37, 2),
                              'status', (ARRAY['new', 'active', 'closed'])[1 + g % 3],
                              'note', md5(g::text),
                              'updated_at', timestamptz '2024-01-01 00:00:00+00'
                                            + g * interval '2.5 ms')
       END,
       NULL, NULL, NULL, b.rk, pgrpl.key_hash('public', 't', b.rk), NULL
  FROM generate_series(:g_from, :g_to) g,
       LATERAL (SELECT (g - 1) / 4 + 1 AS t, (g - 1) % 4 + 1 AS s,
                       (g - 1) % :keys + 1 AS id, (g - 1) / :keys AS pass) a,
       LATERAL (SELECT (CASE WHEN a.pass = 0 THEN 'I'
                             WHEN a.pass >= :passes - 1 THEN 'D'
                             ELSE 'U' END)::"char" AS op,
                       jsonb_build_object('id', a.id) AS rk) b;

-- key changes: between transactions t and t + 1 for t = 10000, 20000, ...
\if :extras
INSERT INTO pgrpl.transaction (sub_id, commit_lsn, end_lsn, xid, commit_time,
                               origin, origin_lsn, changes)
SELECT :sid, '1/0'::pg_lsn + j::numeric * 10240000 + 512, '1/0'::pg_lsn + j::numeric * 10240000 + 568,
       5000000000 + j, timestamptz '2024-01-01 00:00:00+00' + j * interval '100 s',
       NULL, NULL, 1
  FROM generate_series(1, :ntx / 10000) j;
INSERT INTO pgrpl.change (sub_id, commit_lsn, seq, lsn, op, schema_name, table_name,
                          old, new, row_key, key_hash, old_key)
SELECT :sid, '1/0'::pg_lsn + j::numeric * 10240000 + 512, 1, '1/0'::pg_lsn + j::numeric * 10240000 + 400,
       'U', 'public', 't', jsonb_build_object('id', 2 * :keys + j),
       jsonb_build_object('id', :keys + j, 'owner', 'moved', 'balance', 0),
       jsonb_build_object('id', :keys + j),
       pgrpl.key_hash('public', 't', jsonb_build_object('id', :keys + j)),
       jsonb_build_object('id', 2 * :keys + j)
  FROM generate_series(1, :ntx / 10000) j;
\endif
