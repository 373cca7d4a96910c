-- scripts/bench/subscriber.sql: extensions and measuring helpers of the
-- subscriber (after tables.sql).
CREATE EXTENSION pgrpl;
CREATE EXTENSION dblink;

-- End-to-end latency at low load.  Commits n single-row transactions on the
-- primary through dblink (autocommit: dblink_exec returns once the commit
-- is done there), one every 1/rate s, and after each one polls this server
-- until the row is visible: a change of it in subscription sid's log whose
-- transaction has committed (consumer 'pgrpl') or the row in the replica
-- table public.bench_lat (consumer 'builtin').
-- Adds one latency in ms per row to public.bench_lat_result: from "commit
-- returned on the primary" to "first poll that sees it here".  For the
-- first 5 ms the polls follow each other without sleeping (a few
-- microseconds apart), then every ~1 ms (pg_sleep rounds up to whole
-- milliseconds).  Each poll is a statement of its own, so in READ COMMITTED
-- it takes a new snapshot.
-- A first, unmeasured row (id first_id - 1, up to 60 s) makes sure the
-- consumer is streaming.  A procedure, so that it can COMMIT: pgrpl's
-- partitions of the subscription appear with its first captured change,
-- and a transaction that has already read pgrpl.change keeps planning with
-- the partitions it saw then.  So each poll for the unmeasured row ends
-- with a COMMIT; the measured rows are then polled in one transaction, as
-- before (n must stay below pgrpl.partition_size: a partition the worker
-- starts during them would not be seen).
CREATE PROCEDURE public.bench_latency(consumer text, conninfo text, first_id integer,
                                      n integer, rate float8, sid integer)
LANGUAGE plpgsql AS $$
DECLARE
    rid integer;
    h bigint;
    t_start timestamptz;
    t_commit timestamptz;
    seen boolean;
    patience interval;
BEGIN
    PERFORM dblink_connect('bench_lat', conninfo);
    FOR i IN -1..n - 1 LOOP
        rid := first_id + i;
        patience := CASE WHEN i < 0 THEN interval '60 s' ELSE interval '15 s' END;
        h := pgrpl.row_key_hash(jsonb_build_object('id', rid));
        t_start := clock_timestamp();
        PERFORM dblink_exec('bench_lat',
                            format('INSERT INTO public.bench_lat (id) VALUES (%s)', rid));
        t_commit := clock_timestamp();
        LOOP
            IF consumer = 'pgrpl' THEN
                seen := EXISTS (SELECT 1 FROM pgrpl.change c
                                  JOIN pgrpl.transaction t
                                    ON t.sub_id = c.sub_id AND t.txn_id = c.txn_id
                                 WHERE c.sub_id = sid AND c.key_hash = h
                                   AND c.rel_id IN (SELECT r.rel_id FROM pgrpl.relation r
                                                     WHERE r.sub_id = sid
                                                       AND r.schema_name = 'public'
                                                       AND r.table_name = 'bench_lat')
                                   AND t.commit_lsn IS NOT NULL);
            ELSE
                seen := EXISTS (SELECT 1 FROM public.bench_lat l WHERE l.id = rid);
            END IF;
            EXIT WHEN seen;
            IF clock_timestamp() > t_commit + patience THEN
                RAISE EXCEPTION '% latency: row % not visible % after its commit',
                    consumer, rid, clock_timestamp() - t_commit;
            END IF;
            IF i < 0 THEN
                COMMIT;
            END IF;
            IF clock_timestamp() > t_commit + interval '5 ms' THEN
                PERFORM pg_sleep(0.001);
            END IF;
        END LOOP;
        IF i >= 0 THEN
            INSERT INTO public.bench_lat_result
            VALUES (CASE consumer WHEN 'builtin' THEN 'built-in' ELSE consumer END,
                    extract(epoch FROM clock_timestamp() - t_commit) * 1000);
        ELSE
            COMMIT;
        END IF;
        PERFORM pg_sleep(greatest(0, 1.0 / rate
                                     - extract(epoch FROM clock_timestamp() - t_start)));
    END LOOP;
    PERFORM dblink_disconnect('bench_lat');
END
$$;

-- Run query q once to warm up, then `runs` times; elapsed ms of each run.
-- q's expensive part must be in FROM or WHERE: it is run as
-- SELECT count(*) FROM (q) s, which drops unused output columns.  With
-- jit_off, jit is off for these runs only.  steady_ms is the median of the
-- runs from the session's 6th call of q on (NULL with fewer than 5 runs):
-- plpgsql plans a function's statement for its parameters' values the
-- first 5 times, then may keep a generic plan, which is what a client
-- calling the function over and over gets.
CREATE FUNCTION public.bench_time(q text, runs integer, jit_off boolean DEFAULT false,
                                  OUT avg_ms float8, OUT min_ms float8,
                                  OUT max_ms float8, OUT nrows bigint,
                                  OUT steady_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ms float8;
    total float8 := 0;
    late float8[] := '{}';
    sql text := format('SELECT count(*) FROM (%s) s', q);
    old_jit text := current_setting('jit');
BEGIN
    IF jit_off THEN
        PERFORM set_config('jit', 'off', true);
    END IF;
    min_ms := 'Infinity';
    max_ms := 0;
    EXECUTE sql INTO nrows;
    FOR i IN 1..runs LOOP
        t0 := clock_timestamp();
        EXECUTE sql INTO nrows;
        ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
        total := total + ms;
        min_ms := least(min_ms, ms);
        max_ms := greatest(max_ms, ms);
        IF i >= 5 THEN
            late := late || ms;
        END IF;
    END LOOP;
    avg_ms := total / runs;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO steady_ms FROM unnest(late) x;
    PERFORM set_config('jit', old_jit, true);
END
$$;

-- The leaf partitions of subscription sid's change log: tab is 'change' or
-- 'transaction', part the partition number (txn_ids part << 32 and up).
CREATE FUNCTION public.bench_log_leaves(sid integer)
RETURNS TABLE (tab text, part bigint, rel regclass)
LANGUAGE sql STABLE AS $$
    SELECT x.tab, substr(c.relname, length(x.tab || '_' || sid) + 2)::bigint, p.relid::regclass
      FROM unnest(ARRAY['change', 'transaction']) AS x(tab),
           LATERAL pg_partition_tree(to_regclass(format('pgrpl.%I', x.tab || '_' || sid))) p
      JOIN pg_class c ON c.oid = p.relid
     WHERE p.isleaf
     ORDER BY 1, 2
$$;

-- What subscription sid's log takes on disk: bytes of its change and
-- transaction partitions (heap, indexes, TOAST, free space and visibility
-- maps), how many change partitions there are, and the dead and live
-- tuples the statistics count in them.
CREATE FUNCTION public.bench_log_size(sid integer, OUT bytes bigint, OUT partitions integer,
                                      OUT dead_tuples bigint, OUT live_tuples bigint)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(pg_total_relation_size(l.rel)), 0)::bigint,
           count(*) FILTER (WHERE l.tab = 'change')::integer,
           COALESCE(sum(s.n_dead_tup), 0)::bigint, COALESCE(sum(s.n_live_tup), 0)::bigint
      FROM public.bench_log_leaves(sid) l
      LEFT JOIN pg_stat_user_tables s ON s.relid = l.rel
$$;

-- Change rows of subscription sid that no transaction row makes visible
-- any more, in its oldest partition: what purge() hid without removing
-- (it deletes transaction rows only in the partition that straddles its
-- bound, the oldest one it keeps).
CREATE FUNCTION public.bench_hidden_changes(sid integer)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p bigint;
    n bigint;
BEGIN
    SELECT min(l.part) INTO p FROM public.bench_log_leaves(sid) l WHERE l.tab = 'change';
    IF p IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM pgrpl.%I c WHERE NOT EXISTS
                        (SELECT 1 FROM pgrpl.%I t WHERE t.txn_id = c.txn_id)',
                   'change_' || sid || '_' || p, 'transaction_' || sid || '_' || p)
       INTO n;
    RETURN n;
END
$$;

-- Poll this server until query (one boolean) returns true or timeout_s
-- has passed; ok says which.  One psql call per wait: polling from the
-- shell (runuser + psql every 0.1 s) took a fifth of this 2-core
-- machine's CPU while the copy it waited for ran.  A procedure, so that
-- every poll runs in a transaction of its own.
CREATE PROCEDURE public.bench_wait_true(query text, timeout_s float8, INOUT ok boolean DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
BEGIN
    LOOP
        EXECUTE query INTO ok;
        COMMIT;
        IF ok THEN
            RETURN;
        END IF;
        IF clock_timestamp() > deadline THEN
            ok := false;
            RETURN;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
