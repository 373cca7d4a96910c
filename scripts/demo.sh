#!/usr/bin/env bash
# scripts/demo.sh — pgrpl end to end on two throwaway local clusters.
#
# Usage (as root, e.g. on a fresh Debian machine, which has no sudo):
#   bash scripts/demo.sh
# (a user with sudo rights: sudo bash scripts/demo.sh)
#
# Installs the Debian packages, builds and installs pgrpl, then as user
# postgres starts a primary (wal_level=logical) and a subscriber (pgrpl in
# shared_preload_libraries), subscribes to a publication, runs a few
# transactions on the primary and shows what pgrpl recorded: the change log,
# the transactions, the history of one row (inserted, updated, deleted) and
# the table as it was at an LSN taken between two transactions, next to the
# table now.  Only pgrpl's SQL functions are queried, never its tables.
# Everything lives in one temp dir; on exit (also on error) both servers are
# stopped and the dir is removed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

DEMO='' PRIMARY='' SUBSCRIBER=''

# Stop the servers (subscriber first: its worker is the primary's walsender
# client) and remove the temp dir; show the server logs if we failed.
cleanup() {
    local rc=$? dir
    [[ -n $DEMO ]] || return 0
    for dir in "$SUBSCRIBER" "$PRIMARY"; do
        [[ -f $dir/postmaster.pid ]] || continue
        if ((rc != 0)) && [[ -f $dir.log ]]; then
            pgrpl_banner "last lines of ${dir##*/}.log"
            tail -n 30 "$dir.log"
        fi
        pgrpl_as_pg "$PGRPL_PG_BIN/pg_ctl" stop -D "$dir" -m fast -w >/dev/null 2>&1 || true
    done
    cd / && rm -rf "$DEMO"
    if ((rc == 0)); then echo "servers stopped, $DEMO removed"; else echo "demo FAILED (exit status $rc)" >&2; fi
}

# start_cluster DIR PORT [EXTRA-CONF-LINE...]: a logical-level cluster.
start_cluster() {
    pgrpl_start_cluster "$1" "$2" "$DEMO" "wal_level = logical" "${@:3}"
    echo "started ${1##*/} on 127.0.0.1:$2 (log: $1.log)"
}

# psql_on PORT [PSQL-ARGS...]: psql as postgres on the server at PORT,
# echoing each query; SQL from -c or stdin.
psql_on() {
    local port=$1
    shift
    pgrpl_as_pg "$PGRPL_PG_BIN/psql" -X -h "$DEMO" -p "$port" -d postgres \
        -v ON_ERROR_STOP=1 -P pager=off -P format=aligned -P tuples_only=off "$@"
}

pgrpl_require_root
trap cleanup EXIT
trap 'exit 143' INT TERM HUP

pgrpl_banner "dependencies"
pgrpl_install_deps

DEMO=$(pgrpl_make_workdir demo)
cd "$DEMO" # commands run as postgres inherit it; the checkout may be root-only
PRIMARY=$DEMO/primary SUBSCRIBER=$DEMO/subscriber

pgrpl_banner "build + install pgrpl"
if ! pgrpl_build_and_install "$REPO_ROOT" "$DEMO/build" >"$DEMO/build.log" 2>&1; then
    tail -n 40 "$DEMO/build.log"
    exit 1
fi
echo "installed into $("$PGRPL_PG_CONFIG" --pkglibdir)"

pgrpl_banner "start primary and subscriber"
PPORT=$(pgrpl_free_port 54401)
SPORT=$(pgrpl_free_port $((PPORT + 1)))
start_cluster "$PRIMARY" "$PPORT"
start_cluster "$SUBSCRIBER" "$SPORT" "shared_preload_libraries = 'pgrpl'"

pgrpl_banner "primary: table and publication"
psql_on "$PPORT" -e <<'SQL'
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance numeric,
                              tags text[], updated_at timestamptz DEFAULT now());
CREATE PUBLICATION demo_pub FOR TABLE public.accounts;
SQL

pgrpl_banner "subscriber: CREATE EXTENSION pgrpl and subscribe"
psql_on "$SPORT" -e <<SQL
CREATE EXTENSION pgrpl;
SELECT pgrpl.create_subscription('demo',
    'host=127.0.0.1 port=$PPORT dbname=postgres user=postgres', ARRAY['demo_pub']);
SQL

# The primary's slot marks where the change log starts: make sure it exists
# before writing (bounded wait, in case it is created by the worker).
for i in $(seq 30); do
    [[ $(psql_on "$PPORT" -At -c "SELECT count(*) FROM pg_replication_slots
                                  WHERE plugin = 'pgoutput'") != 0 ]] && break
    ((i < 30)) || echo "warning: still no pgoutput slot on the primary; going on"
    sleep 1
done

pgrpl_banner "primary: a few transactions"
psql_on "$PPORT" -e <<'SQL'
INSERT INTO public.accounts (id, owner, balance, tags)
VALUES (1, 'alice', 100, '{vip}'), (2, 'bob', 50, '{}'), (3, 'carol', 75, '{new,trial}');
UPDATE public.accounts SET balance = balance + 25 WHERE id = 1;
DELETE FROM public.accounts WHERE id = 2;
BEGIN;
UPDATE public.accounts SET tags = array_append(tags, 'greeted') WHERE id = 3;
SELECT pg_logical_emit_message(true, 'demo', 'hello');
COMMIT;
SQL
# A point in the past for table_as_of: after the transaction above, before
# the next one.
AS_OF=$(psql_on "$PPORT" -At -c "SELECT pg_current_wal_lsn()")
echo "-- pg_current_wal_lsn() on the primary now: $AS_OF (the past point for table_as_of below)"
psql_on "$PPORT" -e <<'SQL'
TRUNCATE public.accounts;
INSERT INTO public.accounts (id, owner, balance, tags)
VALUES (4, 'dave', 10, '{new}'), (5, 'erin', 40, '{}');
UPDATE public.accounts SET balance = balance + 15, tags = '{}' WHERE id = 4;
DELETE FROM public.accounts WHERE id = 4;
SQL
LSN=$(psql_on "$PPORT" -At -c "SELECT pg_current_wal_lsn()")

pgrpl_banner "subscriber: wait until pgrpl has everything up to $LSN"
psql_on "$SPORT" -e -c "SELECT pgrpl.wait_for_lsn('demo', '$LSN', '30 seconds')"

pgrpl_banner "subscriber: the change log"
psql_on "$SPORT" -e -c "SELECT commit_lsn, seq, xid, op, table_name, old, new, message_prefix,
       convert_from(message_content, 'utf8') AS message
  FROM pgrpl.changes('demo')"
psql_on "$SPORT" -e -c "SELECT commit_lsn, xid, commit_time, changes FROM pgrpl.transactions('demo')"
psql_on "$SPORT" -e -c "SELECT name, state, transactions, changes FROM pgrpl.stat_subscription"

pgrpl_banner "subscriber: the history of account 4 (inserted, updated, deleted)"
psql_on "$SPORT" -e -c "SELECT commit_lsn, xid, op, old, new
  FROM pgrpl.row_history('demo', 'public.accounts', '{\"id\": 4}')"

pgrpl_banner "subscriber: the table as of $AS_OF (before the TRUNCATE), and now"
# table_as_of returns each row as jsonb; jsonb_to_record makes columns again.
psql_on "$SPORT" -e -c "SELECT 'as of $AS_OF' AS state, a.*
  FROM pgrpl.table_as_of('demo', 'public.accounts', '$AS_OF'::pg_lsn) AS t(r),
       jsonb_to_record(t.r) AS a(id int, owner text, balance numeric, tags text[])
UNION ALL
SELECT 'now', a.*
  FROM pgrpl.table_as_of('demo', 'public.accounts') AS t(r),
       jsonb_to_record(t.r) AS a(id int, owner text, balance numeric, tags text[])
ORDER BY state, id"
pgrpl_banner "primary: the table now, for comparison"
psql_on "$PPORT" -e -c "SELECT id, owner, balance, tags FROM public.accounts ORDER BY id"

pgrpl_banner "subscriber: drop the subscription"
psql_on "$SPORT" -e -c "SELECT pgrpl.drop_subscription('demo')"

pgrpl_banner "done"
