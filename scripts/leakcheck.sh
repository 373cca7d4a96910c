#!/usr/bin/env bash
# scripts/leakcheck.sh — memory checks of pgrpl that are too slow for CI.
#
# Usage (as root, after pgrpl is built and installed into $PGRPL_PG_BIN's
# installation, e.g. by a run of scripts/test.sh):
#
#   bash scripts/leakcheck.sh rss [CHANGES]
#       One loopback server; a subscription streams CHANGES (default
#       2000000) inserts/updates/deletes in transactions of 30,000.  After
#       each transaction is captured the worker's private resident memory
#       (RssAnon: /proc/PID/status, shared buffers excluded) is sampled.
#       Prints the samples; fails if, after a warm-up of the first 10%, it
#       grows by more than RSS_SLACK_KB (default 8192).
#
#   bash scripts/leakcheck.sh valgrind
#       The pg_regress suite (Makefile REGRESS) with the temp instance's
#       postmaster and every backend and background worker it forks,
#       the pgrpl worker included, under valgrind memcheck
#       (scripts/valgrind.supp suppresses known server noise).  The Debian
#       server is not built with USE_VALGRIND, so palloc chunks are not
#       tracked one by one: this finds invalid reads/writes at malloc-block
#       level, uses of uninitialised memory and bad frees, not leaks inside
#       memory contexts (the rss mode is for those).  Slow (tens of
#       minutes).  Prints every error report whose stack mentions pgrpl
#       and a summary of all others; fails if any error is left.
#
# VALGRIND_SUPP: another suppressions file (e.g. /dev/null to see all).
# PGRPL_PG_BIN: the PostgreSQL 15 bin dir (default /usr/lib/postgresql/15/bin).
# Servers run as the postgres OS user under a temp dir, removed on success.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

BIN=$PGRPL_PG_BIN
WORK=''

cleanup() {
    local rc=$?
    if [[ -n $WORK && -d $WORK ]]; then
        pgrpl_stop_servers_under "$WORK"
        if ((rc == 0)); then rm -rf "$WORK"; else echo "files kept in $WORK"; fi
    fi
    exit "$rc"
}

psql_w() { pgrpl_as_pg "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PORT" -d postgres "$@"; }

# A fresh loopback instance in $WORK/data.
start_server() {
    PORT=$((20000 + RANDOM % 20000))
    pgrpl_as_pg "$BIN/initdb" -D "$WORK/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
    cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK/sock'
wal_level = logical
shared_preload_libraries = 'pgrpl'
max_wal_senders = 10
max_replication_slots = 10
wal_receiver_status_interval = 1s
max_wal_size = 4GB
EOF
    pgrpl_as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
    psql_w -c 'CREATE EXTENSION pgrpl'
}

rss_mode() {
    local changes=${1:-2000000} batch=10000 rounds i pid anon samples=() warm first last max
    rounds=$(((changes + 3 * batch - 1) / (3 * batch)))
    start_server
    psql_w <<EOF
CREATE TABLE lt (id int PRIMARY KEY, v text, n numeric, j jsonb);
CREATE PUBLICATION lt_pub FOR TABLE lt;
SELECT pgrpl.create_subscription('leak', format('host=%s port=%s dbname=postgres user=postgres',
       '$WORK/sock', $PORT), ARRAY['lt_pub'], copy_data => false) IS NOT NULL;
EOF
    warm=$((rounds / 10 > 0 ? rounds / 10 : 1))
    echo "streaming $((rounds * 3 * batch)) changes in $rounds rounds of $((3 * batch)) (warm-up: $warm rounds)"
    for ((i = 1; i <= rounds; i++)); do
        psql_w >/dev/null <<EOF
BEGIN;
INSERT INTO lt SELECT g, md5(g::text), g / 7.0, jsonb_build_object('k', g, 'a', ARRAY[g, g])
  FROM generate_series(1, $batch) g;
UPDATE lt SET v = v || 'x', n = n + 1;
DELETE FROM lt;
COMMIT;
SELECT pgrpl.wait_for_lsn('leak', pg_current_wal_lsn(), '600 seconds');
EOF
        pid=$(psql_w -c "SELECT pid FROM pgrpl.stat_subscription WHERE name = 'leak'")
        anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
        samples+=("$anon")
        if ((i % 5 == 0 || i == rounds)); then
            printf 'round %3d  changes %8d  worker pid %s  RssAnon %6d kB  %s\n' "$i" \
                "$((i * 3 * batch))" "$pid" "$anon" "$(grep -E '^VmHWM' "/proc/$pid/status" | tr -s ' \t' ' ')"
        fi
        # the change log would grow without bound: keep it small
        ((i % 10)) || psql_w -c "SELECT pgrpl.purge('leak', pg_current_wal_lsn())" >/dev/null
    done
    psql_w -c "SELECT transactions, changes FROM pgrpl.stat_subscription WHERE name = 'leak'" |
        awk -F'|' '{print "worker counted " $1 " transactions, " $2 " changes"}'
    first=${samples[$warm]}
    last=${samples[-1]}
    max=$first
    for anon in "${samples[@]:$warm}"; do ((anon > max)) && max=$anon; done
    echo "RssAnon after warm-up ${first} kB, at the end ${last} kB, max ${max} kB (growth $((last - first)) kB)"
    psql_w -c "SELECT pgrpl.drop_subscription('leak')" >/dev/null
    if ((last - first > ${RSS_SLACK_KB:-8192})); then
        echo "FAIL: the worker's private memory grew by more than ${RSS_SLACK_KB:-8192} kB"
        return 1
    fi
    echo "OK: flat"
}

valgrind_mode() {
    local wrap=$WORK/bin f tree=$WORK/pgrpl nerr
    command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null; }
    # A bin dir whose postgres runs the real one under valgrind; everything
    # else (initdb, pg_ctl, psql) is the real binary.
    mkdir -p "$wrap" "$WORK/vg"
    for f in "$BIN"/*; do ln -s "$f" "$wrap/$(basename "$f")"; done
    rm "$wrap/postgres"
    cat >"$wrap/postgres" <<EOF
#!/bin/sh
case "\$1" in -V|--version|--boot|--single|--describe-config|-C) exec "$BIN/postgres" "\$@";; esac
exec valgrind -v --error-limit=no --leak-check=no --track-origins=yes \\
    --num-callers=40 --read-var-info=no --trace-children=no \\
    --suppressions="${VALGRIND_SUPP:-$SCRIPT_DIR/valgrind.supp}" --gen-suppressions=all \\
    --log-file="$WORK/vg/%p.log" "$BIN/postgres" "\$@"
EOF
    chmod 755 "$wrap/postgres"
    chown -R "$PGRPL_PG_USER": "$WORK"

    pgrpl_prepare_tree "$REPO_ROOT" "$tree"
    pgrpl_build "$tree"
    pgrpl_install "$tree"
    echo "running the pg_regress suite under valgrind (slow)"
    local regress
    regress=$(sed -n 's/^REGRESS = //p' "$tree/Makefile")
    # pg_regress starts "$bindir/postgres": the wrapper.
    (cd "$tree" && pgrpl_as_pg env TMPDIR="$WORK" \
        "$("$BIN/pg_config" --pgxs | xargs dirname)/../../src/test/regress/pg_regress" \
        --bindir="$wrap" --inputdir=. --temp-instance="$tree/tmp_check_regress" \
        --temp-config=test/regress.conf --load-extension=pgrpl \
        --dbname=contrib_regression $regress) | tee "$WORK/regress.log" || true

    # Every process that exits normally ends its log with "ERROR SUMMARY:
    # N errors from M contexts (suppressed: S from T)".
    nerr=$(cat "$WORK"/vg/*.log | sed -n 's/^==[0-9]*== ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' |
        awk '{s += $1} END {print s + 0}')
    echo "processes run under valgrind: $(ls "$WORK"/vg/*.log | wc -l)," \
        "with an ERROR SUMMARY: $(grep -l 'ERROR SUMMARY' "$WORK"/vg/*.log | wc -l)"
    echo "valgrind errors (all processes): $nerr"
    echo "suppressed (all processes):"
    grep -h 'used_suppression:' "$WORK"/vg/*.log |
        awk '{n[substr($0, index($0, $4))] += $3} END {for (k in n) printf "  %6d  %s\n", n[k], k}' |
        sort -rn
    for f in $(grep -l 'ERROR SUMMARY: [1-9]' "$WORK"/vg/*.log); do
        echo "== $f =="
        grep -v '^--[0-9]*--' "$f" | grep -A40 -E '^==[0-9]*== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and)' | head -200
    done
    grep -q 'All [0-9]* tests passed' "$WORK/regress.log" || { echo "FAIL: the suite failed under valgrind"; return 1; }
    ((nerr == 0)) || { echo "FAIL: valgrind reported errors"; return 1; }
    echo "OK: no valgrind errors"
}

main() {
    pgrpl_require_root
    trap cleanup EXIT
    WORK=$(mktemp -d /tmp/pgrpl-leak.XXXXXX)
    mkdir -p "$WORK/sock"
    chown -R "$PGRPL_PG_USER": "$WORK"
    case ${1:-} in
        rss) shift; rss_mode "$@" ;;
        valgrind) valgrind_mode ;;
        *) pgrpl_die "usage: $0 rss [CHANGES] | valgrind" ;;
    esac
}

main "$@"
