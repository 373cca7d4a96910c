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
# transactions on the primary and shows the change log pgrpl recorded.
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
TRUNCATE public.accounts;
SQL
LSN=$(psql_on "$PPORT" -At -c "SELECT pg_current_wal_lsn()")

pgrpl_banner "subscriber: wait until pgrpl has everything up to $LSN"
psql_on "$SPORT" -e -c "SELECT pgrpl.wait_for_lsn('demo', '$LSN', '30 seconds')"

pgrpl_banner "subscriber: the change log"
psql_on "$SPORT" -e -c "SELECT commit_lsn, seq, xid, op, table_name, old, new, message_prefix,
       convert_from(message_content, 'utf8') AS message
  FROM pgrpl.changes('demo')"
psql_on "$SPORT" -e -c "SELECT name, state, transactions, changes FROM pgrpl.stat_subscription"

pgrpl_banner "subscriber: drop the subscription"
psql_on "$SPORT" -e -c "SELECT pgrpl.drop_subscription('demo')"

pgrpl_banner "done"
