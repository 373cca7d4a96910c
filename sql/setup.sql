--
-- setup: helpers shared by the pgrpl regression tests.
--
-- The tests subscribe to this very server ("loopback"): the primary is the
-- pg_regress temp instance, reached over its Unix socket.  pg_regress has
-- already run CREATE EXTENSION pgrpl (--load-extension).
--
\set VERBOSITY terse

SELECT extname, extversion, nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'pgrpl';

SHOW wal_level;

-- A value quoted for a libpq connection string.
CREATE FUNCTION public.conn_value(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT '''' || replace(replace(v, '\', '\\'), '''', '\''') || ''''
$$;

-- A libpq connection string to this server and database, as the bootstrap
-- superuser.  Never shown in expected output (socket path and port vary).
CREATE FUNCTION public.loopback_conninfo() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('host=%s port=%s dbname=%s user=%s',
                  public.conn_value(btrim(split_part(
                      current_setting('unix_socket_directories'), ',', 1))),
                  current_setting('port'),
                  public.conn_value(current_database()),
                  public.conn_value((SELECT rolname FROM pg_roles WHERE oid = 10)))
$$;

-- Bounded wait: true once subscription "sub" has captured everything this
-- server has written so far; false after 60 seconds (or as soon as the
-- worker has finished at a stop_lsn before that point).  Never a bare sleep.
CREATE FUNCTION public.wait_sub(sub text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pgrpl.wait_for_lsn(sub, pg_current_wal_lsn(), '60s')
$$;

-- Bounded poll for things that have no LSN to wait for (a worker or
-- walsender exiting): true as soon as the boolean query "cond" returns
-- true, false if it still does not after 60 seconds.  Checks every 10 ms.
CREATE FUNCTION public.poll_until(cond text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
    ok boolean;
BEGIN
    LOOP
        EXECUTE cond INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
        -- pg_stat_activity is a snapshot taken once per transaction.
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END
$$;

-- The worker of "sub" has exited (after disable_subscription).
CREATE FUNCTION public.wait_stopped(sub text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT public.poll_until(format(
        'SELECT NOT EXISTS (SELECT 1 FROM pgrpl.stat_subscription
                             WHERE name = %L AND pid IS NOT NULL)', sub))
$$;

-- No walsender of application_name "app" is left (pgrpl connects to the
-- primary with the subscription name as fallback_application_name).  The
-- pg_regress server inherits PGAPPNAME, which wins over that name, so all
-- walsenders may be called "pg_regress": then wait until every walsender
-- left streams the slot of another enabled subscription.
CREATE FUNCTION public.wait_no_walsender(app text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT public.poll_until(format(
        'SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.backend_type = %L
                               AND (a.application_name = %L
                                    OR NOT EXISTS (
                                        SELECT 1 FROM pg_replication_slots s
                                          JOIN pgrpl.subscription sub ON sub.slot_name = s.slot_name
                                         WHERE s.active_pid = a.pid AND sub.enabled
                                           AND sub.sub_name <> %L)))',
        'walsender', app, app))
$$;

-- Create a subscription to this server; true on success (the start LSN it
-- returns is not deterministic).
CREATE FUNCTION public.create_sub(sub text, pubs text[]) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pgrpl.create_subscription(sub, public.loopback_conninfo(), pubs, copy_data => false) IS NOT NULL
$$;

-- The captured changes of a subscription without anything that varies from
-- run to run (LSNs, xids, times): txn numbers the transactions (and
-- non-transactional messages) in commit order, seq the changes within one.
CREATE FUNCTION public.captured(sub text)
RETURNS TABLE (txn bigint, seq integer, op text, schema_name text,
               table_name text, old jsonb, new jsonb, unchanged text[])
LANGUAGE sql STABLE AS $$
    SELECT dense_rank() OVER (ORDER BY c.commit_lsn), c.seq, c.op,
           c.schema_name, c.table_name, c.old, c.new, c.unchanged
      FROM pgrpl.changes(sub) c
     ORDER BY c.commit_lsn, c.seq
$$;

-- The conninfo parses; the library is preloaded.
SELECT pgrpl.mask_conninfo(public.loopback_conninfo()) IS NOT NULL AS conninfo_parses;
SELECT current_setting('unix_socket_directories') <> '' AS has_socket;
SHOW shared_preload_libraries;

-- Nothing is left over from an earlier run.
SELECT count(*) AS subscriptions FROM pgrpl.subscription;
SELECT count(*) AS slots FROM pg_replication_slots;
