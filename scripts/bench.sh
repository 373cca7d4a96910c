#!/usr/bin/env bash
# scripts/bench.sh — pgrpl throughput, latency and query benchmarks.
#
# Usage (as root, like scripts/demo.sh):
#   bash scripts/bench.sh [--quick] [throughput] [latency] [queries] [streaming] [snapshot]
#
# No part named: the first four (snapshot only when named).  --quick (or PGRPL_BENCH_SCALE=...) scales every
# size down; --quick finishes in about a minute and is meant for CI (it only
# shows that everything runs and prints the tables).
#
#   throughput  Two clusters on loopback.  For each workload, one slot per
#               consumer and repetition is created first, then the backlog is
#               built on the primary with every consumer stopped, then each
#               consumer drains the identical WAL range alone and is timed
#               from its start until the primary's slot has confirmed the
#               target LSN (pg_current_wal_lsn() after the backlog):
#                 ceiling   pg_recvlogical, pgoutput proto 1, to /dev/null
#                 built-in  CREATE SUBSCRIPTION (copy_data = false) applying
#                           into empty replica tables, default options
#                           (synchronous_commit = off, streaming = off)
#                 pgrpl     a pgrpl subscription materializing the changes
#               Workloads: (a) small transactions of INSERT + UPDATE + DELETE,
#               (b) one transaction inserting every row, (c) 20-column rows
#               with an 8-20 kB TOASTed column, updates not touching it,
#               (d) mixed: small transactions (an upsert and an UPDATE or a
#               DELETE each) with one large INSERT transaction in the middle
#               of the same backlog.
#               Every workload is drained over each transport (TCP to
#               127.0.0.1, and the Unix socket): each consumer has its own
#               slots per transport, all created before the one backlog.
#               Prints the median of the repetitions, changes/s, the ratios
#               pgrpl/ceiling and pgrpl/built-in, the walsender-bound limit
#               (changes / the CPU seconds of the walsender serving pgrpl,
#               measured in the same drain) and pgrpl's drain time over that
#               walsender CPU time (1.0: the worker keeps up with what the
#               primary can decode), the pgrpl worker's peak
#               memory, and (measured after each drain's timing) the disk
#               use of pgrpl's log per change next to that of the built-in
#               consumer's replica table per row, the WAL the subscriber
#               wrote during each drain per change, and over TCP the
#               segments the walsender sent (ss -ti) and bytes per segment.  A drain's time includes
#               the consumer's final flush report (the built-in worker naps
#               up to 1 s when idle, pgrpl flushes its last commit itself
#               10 ms after the stream goes quiet, pgrpl.idle_flush_delay); the
#               subscriber has wal_retrieve_retry_interval = 100ms, as the
#               built-in launcher otherwise starts at most one apply worker
#               per 5 s, which would delay every enable after the first.
#               Both servers run with autovacuum = off (a vacuum of what
#               one drain wrote ran into the next); the subscriber is
#               warmed up first (more than shared_buffers written and
#               checkpointed: WAL segments to recycle, buffers touched), so
#               the first drain does not pay for a new server.
#   latency     Single-row transactions at ~20/s: commit on the primary to
#               row visible on the subscriber, p50/p99, pgrpl and built-in.
#   queries     Synthetic change logs written straight into pgrpl's storage
#               2.0 tables, partitioned as the worker would have (10M
#               changes at full scale, and one of 10k changes); times
#               pgrpl.changes (newest 1000 rows, max_rows),
#               pgrpl.row_history and pgrpl.decode; the per-relation cost
#               (table_as_of, changes(relation => ...), row_history of a
#               100-row table in the small and in the big log); prints the
#               plans pgrpl's functions actually run and the rows they read
#               from the log's partitions; then times pgrpl.purge of the
#               older half of the big log and shows what it left.
#   streaming   One transaction of B_ROWS inserts (workload (b)'s rows), with
#               streaming on both sides: the primary's walsender streams it
#               while it is decoded (logical_decoding_work_mem, 64MB; 64kB
#               with --quick).  Backlog drains as in throughput, built-in
#               subscription WITH (streaming = on) against pgrpl (which
#               streams by default), with the spill_bytes of each slot; then
#               live: each consumer alone, the transaction committed on the
#               primary while the consumer streams, and the time from COMMIT
#               returning to the rows visible on the subscriber.
#   snapshot    One table of S_ROWS rows (5M; 5k with --quick) of (b)'s
#               shape on the primary, copied by each consumer alone from an
#               idle primary: built-in CREATE SUBSCRIPTION (copy_data = true,
#               default options) timed until its table sync is ready
#               (pg_subscription_rel 'r'); pgrpl create_subscription
#               (copy_data default) timed until pgrpl.stat_snapshot says
#               done.  Rows/s, the ratio, the copying process's peak
#               RssAnon (built-in: its table sync worker).  PGRPL_BENCH_SNAP_REPS
#               copies per consumer (1).
#
# Environment:
#   PGRPL_PG_BIN         PostgreSQL bin dir (lib.sh; default the system one)
#   PGRPL_BENCH_SCALE    size factor (1 = full; --quick: 0.01)
#   PGRPL_BENCH_REPS     drains per consumer and workload (3; --quick: 1)
#   PGRPL_BENCH_WORKLOADS  subset of "a b c d"
#   PGRPL_BENCH_TRANSPORTS subset of "tcp unix" (default both)
#   PGRPL_BENCH_CONSUMERS  subset of "ceiling builtin pgrpl" (ratios need all)
#   PGRPL_BENCH_PERF     a directory: perf record (call graphs, PGRPL_BENCH_PERF_FREQ
#                        samples/s, default 499) every consumer
#                        and its walsender during each drain into it
#   PGRPL_BENCH_PERF_EVENT  perf record's event options instead of sampling
#                        (e.g. "-e sched:sched_switch": where each one sleeps)
#   PGRPL_BENCH_TRACE    a directory: every 0.1 s of a drain, the time and
#                        /proc/PID/schedstat of the consumer and of its
#                        walsender (ns on CPU, ns waiting for a CPU, time
#                        slices), one line each, as TAG.trace
#   PGRPL_BENCH_PERF_SCHED=1  also `perf sched record -a -g` the whole machine
#                        during each drain ($tag-sched.data, the consumer's and
#                        the walsender's pids in $tag-pids), for
#                        `perf sched timehist -p PID`: who waits for whom
#   PGRPL_BENCH_TIMEOUT  limit of one drain in seconds (1800; --quick: 120)
#   PGRPL_BENCH_STREAM_WORK_MEM  the walsender's logical_decoding_work_mem in
#                        the streaming part (64MB; --quick: 64kB), set through
#                        both consumers' conninfo
#
# The subscriber runs with pgrpl.partition_size = 1000000 * scale (the
# default at full scale), so a --quick log has as many partitions as a full
# one.  Everything lives in one temp dir; on exit both servers are stopped
# and the dir is removed.  Nothing but 127.0.0.1 and unix sockets is used.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# ------------------------------------------------------------- arguments --

QUICK=0
PARTS=()
for arg in "$@"; do
    case $arg in
        --quick | -q) QUICK=1 ;;
        throughput | latency | queries | streaming | snapshot) PARTS+=("$arg") ;;
        all) PARTS+=(throughput latency queries streaming snapshot) ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; pgrpl_die "unknown argument: $arg" ;;
    esac
done
((${#PARTS[@]} > 0)) || PARTS=(throughput latency queries streaming)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

if ((QUICK)); then
    SCALE=${PGRPL_BENCH_SCALE:-0.01} REPS=${PGRPL_BENCH_REPS:-1}
    DRAIN_TIMEOUT=${PGRPL_BENCH_TIMEOUT:-120} QUERY_RUNS=6 LAT_N=20
else
    SCALE=${PGRPL_BENCH_SCALE:-1} REPS=${PGRPL_BENCH_REPS:-3}
    DRAIN_TIMEOUT=${PGRPL_BENCH_TIMEOUT:-1800} QUERY_RUNS=10 LAT_N=200
fi
WORKLOADS=${PGRPL_BENCH_WORKLOADS:-a b c d}
TRANSPORTS=${PGRPL_BENCH_TRANSPORTS:-tcp unix}
CONSUMERS=${PGRPL_BENCH_CONSUMERS:-ceiling builtin pgrpl}
CLK_TCK=$(getconf CLK_TCK)
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || pgrpl_die "PGRPL_BENCH_SCALE must be a positive number"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || pgrpl_die "PGRPL_BENCH_REPS must be a positive integer"
[[ $DRAIN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || pgrpl_die "PGRPL_BENCH_TIMEOUT must be a positive integer"
for w in $WORKLOADS; do [[ $w == [abcd] ]] || pgrpl_die "PGRPL_BENCH_WORKLOADS: unknown workload $w"; done
for t in $TRANSPORTS; do [[ $t == @(tcp|unix) ]] || pgrpl_die "PGRPL_BENCH_TRANSPORTS: unknown transport $t"; done
for c in $CONSUMERS; do
    [[ $c == @(ceiling|builtin|pgrpl) ]] || pgrpl_die "PGRPL_BENCH_CONSUMERS: unknown consumer $c"
done

# An awk prelude for the result tables: med(a, m) sorts a[1..m] in place
# (insertion sort: a handful of drains) and returns their median.
AWK_MEDIAN='
function med(a, m,   i, j, tmp) {
    for (i = 2; i <= m; i++) { tmp = a[i]; for (j = i - 1; j >= 1 && a[j] > tmp; j--) a[j + 1] = a[j]; a[j + 1] = tmp }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
'

# scaled SIZE MIN: round(SIZE * SCALE), at least MIN
scaled() { awk -v s="$1" -v f="$SCALE" -v m="$2" 'BEGIN { v = int(s * f + 0.5); print (v < m ? m : v) }'; }
A_TXNS=$(scaled 334000 300)           # (a): 3 * A_TXNS - 300 changes
B_ROWS=$(scaled 1000000 1000)         # (b): B_ROWS changes in one transaction
C_ROWS=$(scaled 10000 50)             # (c): C_ROWS inserts + C_ROUNDS updates of each
C_ROUNDS=20 C_BATCH=10
D_TXNS=$(scaled 60000 300)            # (d): D_TXNS small transactions of 2 changes
D_ROWS=$(scaled 300000 300)           # ... and one of D_ROWS inserts in the middle
STREAM_LDWM=64MB
S_ROWS=$(scaled 5000000 5000)         # snapshot: rows of the table copied
S_REPS=${PGRPL_BENCH_SNAP_REPS:-1}
((QUICK)) && STREAM_LDWM=64kB
STREAM_LDWM=${PGRPL_BENCH_STREAM_WORK_MEM:-$STREAM_LDWM}
Q_ROWS=$(scaled 10000000 100000)      # queries: synthetic changes of public.t (log qbench)
Q_KEYS=$((Q_ROWS / 10))               # ... over this many row keys, 10 changes each
Q_SMALL_CHANGES=300                   # ... and of public.small: 100 rows x 3, in each log
Q_SMALL_LOG=10000                     # changes of the small log qsmall (public.t's and public.small's)
Q_SMALL_ROWS=$((Q_SMALL_LOG - Q_SMALL_CHANGES)) Q_SMALL_KEYS=$(((Q_SMALL_LOG - Q_SMALL_CHANGES) / 10))
PARTITION_SIZE=$(scaled 1000000 1000) # pgrpl.partition_size: the default at full scale
LAT_RATE=20                           # latency: transactions per second

declare -A W_TITLE=(
    [a]="(a) small txns: INSERT+UPDATE+DELETE"
    [b]="(b) one txn of INSERTs"
    [c]="(c) 20 cols, TOASTed 8-20 kB, updates"
    [d]="(d) mixed: small txns + 1 large"
)
declare -A W_CHANGES=(
    [a]=$((3 * A_TXNS - 300))
    [b]=$B_ROWS
    [c]=$((C_ROWS * (1 + C_ROUNDS)))
    [d]=$((2 * D_TXNS + D_ROWS))
)
# What the replica table must hold after a built-in drain (primary = replica).
declare -A W_CHECK=(
    [a]="SELECT count(*) || '/' || sum(k) || '/' || sum(n) FROM public.bench_a"
    [b]="SELECT count(*) || '/' || sum(k) FROM public.bench_b"
    [c]="SELECT count(*) || '/' || sum(c01) || '/' || sum(c15) || '/' || sum(length(big)) FROM public.bench_c"
    [d]="SELECT count(*) || '/' || sum(k) || '/' || count(v) FROM public.bench_d"
)

# ------------------------------------------------------------- machinery --

BENCH='' PRIMARY='' SUBSCRIBER='' SAMPLER_PID=''

cleanup() {
    local rc=$? dir
    [[ -n $BENCH ]] || return 0
    if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
    for dir in "$SUBSCRIBER" "$PRIMARY"; do
        [[ -f $dir/postmaster.pid ]] || continue
        if ((rc != 0)) && [[ -f $dir.log ]]; then
            pgrpl_banner "last lines of ${dir##*/}.log"
            tail -n 30 "$dir.log"
        fi
        pgrpl_as_pg "$PGRPL_PG_BIN/pg_ctl" stop -D "$dir" -m fast -w >/dev/null 2>&1 ||
            pgrpl_as_pg "$PGRPL_PG_BIN/pg_ctl" stop -D "$dir" -m immediate -w >/dev/null 2>&1 || true
    done
    cd / && rm -rf "$BENCH"
    if ((rc == 0)); then echo "servers stopped, $BENCH removed"; else echo "bench FAILED (exit status $rc)" >&2; fi
}

# psql on the primary (p) or subscriber (s); SQL from -c/-f or stdin.
psql_p() {
    pgrpl_as_pg "$PGRPL_PG_BIN/psql" -X -q -h "$BENCH" -p "$PPORT" -d postgres \
        -v ON_ERROR_STOP=1 "$@"
}
psql_s() {
    pgrpl_as_pg "$PGRPL_PG_BIN/psql" -X -q -h "$BENCH" -p "$SPORT" -d postgres \
        -v ON_ERROR_STOP=1 "$@"
}
# One value (unaligned, tuples only).
q_p() { psql_p -At -c "$1"; }
q_s() { psql_s -At -c "$1"; }
# The same without NOTICEs (CREATE SUBSCRIPTION announces its slot).
q_s_quiet() { psql_s -At -c "SET client_min_messages = warning" -c "$1"; }

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log() { printf '  %s %s\n' "$(date +%T)" "$*"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# cpu_ticks PID VAR: set VAR to the user + system CPU time of PID so far,
# in clock ticks; leave it alone if PID is gone.  Builtins only: the sampler
# runs this every 100 ms on the machine it measures.
cpu_ticks() {
    local stat
    local -a f
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 0
    # fields after the ")" that ends the command name: utime is 12th, stime 13th
    read -ra f <<<"${stat##*) }"
    printf -v "$2" '%d' $((f[11] + f[12]))
}

# Sample one drain until file $3 exists: the consumer (pid printed by the
# command $2, retried until it exists) and the walsender serving slot $1.
# Writes "consumer-pid peak-RssAnon-kB VmHWM-kB consumer-CPU-s walsender-CPU-s"
# to $4: memory of the consumer, CPU used by each during the drain (last
# reading before it exited or the drain ended).  With PGRPL_BENCH_PERF set,
# both are also recorded with perf into that directory as $5-*.data.
# Bounded by the drain timeout.
proc_sampler() {
    local slot=$1 pidcmd=$2 stop=$3 out=$4 tag=$5
    local pid='' wpid='' i key val _ anon=0 peak=0 hwm=0 c0='' c='' w0='' w='' cpu wcpu
    local -a perfs=()
    for ((i = 0; i < 400; i++)); do
        [[ -e $stop ]] && break
        [[ -n $pid ]] || pid=$(eval "$pidcmd" || true)
        [[ -n $wpid ]] || wpid=$(q_p "SELECT active_pid FROM pg_replication_slots
                                      WHERE slot_name = '$slot' AND active_pid IS NOT NULL" || true)
        [[ -n $pid && -n $wpid ]] && break
        sleep 0.05
    done
    if [[ -z $pid || -z $wpid ]]; then
        echo "- 0 0 0 0" >"$out"
        return
    fi
    cpu_ticks "$pid" c0
    cpu_ticks "$wpid" w0
    c=$c0 w=$w0
    if [[ -n ${PGRPL_BENCH_PERF:-} ]]; then
        perf record -q -g ${PGRPL_BENCH_PERF_EVENT:--F ${PGRPL_BENCH_PERF_FREQ:-499}} -p "$pid" -o "$PGRPL_BENCH_PERF/$tag-consumer.data" >/dev/null 2>&1 &
        perfs+=($!)
        perf record -q -g ${PGRPL_BENCH_PERF_EVENT:--F ${PGRPL_BENCH_PERF_FREQ:-499}} -p "$wpid" -o "$PGRPL_BENCH_PERF/$tag-walsender.data" >/dev/null 2>&1 &
        perfs+=($!)
        if [[ -n ${PGRPL_BENCH_PERF_SCHED:-} ]]; then
            echo "$pid $wpid" >"$PGRPL_BENCH_PERF/$tag-pids"
            perf sched record -a -g -o "$PGRPL_BENCH_PERF/$tag-sched.data" >/dev/null 2>&1 &
            perfs+=($!)
        fi
    fi
    for ((i = 0; i < DRAIN_TIMEOUT * 10 + 50; i++)); do
        cpu_ticks "$pid" c
        cpu_ticks "$wpid" w
        if [[ -r /proc/$pid/status ]]; then
            while read -r key val _; do
                case $key in
                    RssAnon:) anon=$val ;;
                    VmHWM:) hwm=$val ;;
                esac
            done 2>/dev/null <"/proc/$pid/status" || true
            ((anon > peak)) && peak=$anon
        fi
        [[ -z $TRACE_FILE ]] ||
            echo "$EPOCHREALTIME $(cat "/proc/$pid/schedstat" "/proc/$wpid/schedstat" 2>/dev/null | tr '\n' ' ')" >>"$TRACE_FILE"
        [[ -e $stop ]] && break
        nap 0.1
    done
    if ((${#perfs[@]} > 0)); then
        kill -INT "${perfs[@]}" 2>/dev/null || true
        wait "${perfs[@]}" 2>/dev/null || true
    fi
    cpu=$(awk -v a="${c0:-0}" -v b="${c:-0}" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    wcpu=$(awk -v a="${w0:-0}" -v b="${w:-0}" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    echo "$pid $peak $hwm $cpu $wcpu" >"$out"
}

# Start the sampler of a drain in the background (SAMPLER_PID).
start_sampler() {
    rm -f "$BENCH/sampler.stop" "$BENCH/sampler.out"
    TRACE_FILE=${PGRPL_BENCH_TRACE:+$PGRPL_BENCH_TRACE/$3.trace}
    [[ -z $TRACE_FILE ]] || echo "$EPOCHREALTIME enabled" >"$TRACE_FILE"
    proc_sampler "$1" "$2" "$BENCH/sampler.stop" "$BENCH/sampler.out" "$3" &
    SAMPLER_PID=$!
}

# Stop it and set SAMPLE to its line (see proc_sampler).  Not in a
# subshell: only this shell can wait for the sampler.
SAMPLE='' TRACE_FILE=''
stop_sampler() {
    touch "$BENCH/sampler.stop"
    wait "$SAMPLER_PID" || true
    SAMPLER_PID=''
    SAMPLE="- 0 0 0 0"
    if [[ -s $BENCH/sampler.out ]]; then SAMPLE=$(cat "$BENCH/sampler.out"); fi
    [[ -z $TRACE_FILE ]] || log "trace: $(trace_summary "$TRACE_FILE")"
}

# trace_summary FILE: from the first to the last sample of a trace (see
# PGRPL_BENCH_TRACE), seconds each process ran, waited for a CPU (run
# queue), and, for the walsender, slept (neither: waiting on its socket).
trace_summary() {
    awk 'NF >= 7 { n++; if (n == 1) { t0 = $1; c0 = $2; cq0 = $3; w0 = $5; wq0 = $6 }
                   t = $1; c = $2; cq = $3; w = $5; wq = $6 }
         END { if (n < 2) { print "too short"; exit }
               span = t - t0; wr = (w - w0) / 1e9; wqs = (wq - wq0) / 1e9
               printf "%.2f s sampled: consumer ran %.2f s, waited for a CPU %.2f s; walsender ran %.2f s, waited for a CPU %.2f s, slept %.2f s\n",
                      span, (c - c0) / 1e9, (cq - cq0) / 1e9, wr, wqs, span - wr - wqs }' "$1"
}

# Sleep $1 seconds without starting a process: a read that times out on a
# FIFO nobody writes to.  The drain sampler wakes every 0.1 s, and each
# forked sleep cost about 5 ms of CPU here: 5% of a core taken from the
# processes being measured, and a scheduling disturbance.
NAP_FD=''
nap() { read -rt "$1" -u "$NAP_FD" _ || true; }

# CHECKPOINT both servers: every drain starts without dirty buffers.
checkpoint_both() {
    q_p "CHECKPOINT" >/dev/null
    q_s "CHECKPOINT" >/dev/null
}

# A server started moments ago makes its first drain pay for what a
# running one has done long ago: creating WAL segment files (16 MB of zeros
# each: 13% of pgrpl's worker's CPU in a first drain of (c)) and the first
# touch of every shared buffer.  Whoever drained first paid it.  Write more
# than shared_buffers through them once, then checkpoint twice, so the
# segments are recycled and every drain finds them.
warm_up() {
    local rows
    rows=$(awk -v s="$SCALE" 'BEGIN { n = int(400000 * s); print (n < 2000 ? 2000 : n) }')
    q_s "CREATE TABLE public.bench_warm (v text)" >/dev/null
    q_s "INSERT INTO public.bench_warm SELECT repeat(md5(g::text), 30) FROM generate_series(1, $rows) g" >/dev/null
    q_s "DROP TABLE public.bench_warm" >/dev/null
    q_s "CHECKPOINT" >/dev/null
    q_s "CHECKPOINT" >/dev/null
}

RESULTS='' # $BENCH/results: "workload consumer rep seconds consumer-CPU-s walsender-CPU-s"
MEM=''     # $BENCH/mem:     "workload rep pid peak-RssAnon-kB VmHWM-kB consumer-CPU-s walsender-CPU-s"
SIZES=''   # $BENCH/sizes:   "workload consumer rep bytes units" (record_size)
WALS=''    # $BENCH/wal:     "workload consumer rep bytes" (subscriber WAL of a drain)
SEGS=''    # $BENCH/segs:    "workload consumer rep segments bytes" (TCP drains)

# ----------------------------------------------------------- throughput --

# Slots (and disabled subscriptions) for every consumer and repetition of
# workload $1, created before its backlog.
# The primary's address over transport $1: 127.0.0.1 or the socket dir.
host_of() { if [[ $1 == unix ]]; then echo "$BENCH"; else echo 127.0.0.1; fi; }
conninfo_of() { echo "host=$(host_of "$1") port=$PPORT dbname=postgres user=postgres"; }

# Slots (and disabled subscriptions) for every consumer, transport and
# repetition of workload $1, created before its backlog.  A drain's key is
# WORKLOAD_TRANSPORT (e.g. a_tcp).
create_consumers() {
    local w=$1 r t k
    for t in $TRANSPORTS; do
        k=${w}_$t
        for ((r = 1; r <= REPS; r++)); do
            pgrpl_as_pg "$PGRPL_PG_BIN/pg_recvlogical" -h "$BENCH" -p "$PPORT" -d postgres \
                --slot="rl_${k}_$r" --create-slot -P pgoutput
            q_s_quiet "CREATE SUBSCRIPTION bi_${k}_$r CONNECTION '$(conninfo_of "$t")' PUBLICATION bench_pub
                       WITH (enabled = false, copy_data = false, slot_name = 'bi_${k}_$r')"
            q_s "SELECT pgrpl.create_subscription('pg_${k}_$r', '$(conninfo_of "$t")', ARRAY['bench_pub'],
                                                  enabled => false, copy_data => false)" >/dev/null
        done
    done
}

drop_consumers() {
    local w=$1 r t k
    q_s "TRUNCATE pgrpl.change, pgrpl.transaction" >/dev/null
    for t in $TRANSPORTS; do
        k=${w}_$t
        for ((r = 1; r <= REPS; r++)); do
            q_s_quiet "DROP SUBSCRIPTION bi_${k}_$r" >/dev/null
            q_s "SELECT pgrpl.drop_subscription('pg_${k}_$r')" >/dev/null
            q_p "SELECT pg_drop_replication_slot('rl_${k}_$r')" >/dev/null
        done
    done
}

build_backlog() {
    local w=$1
    case $w in
        a) printf '%s\n' "SET synchronous_commit = off;" "CALL public.bench_build_a($A_TXNS);" | psql_p ;;
        b) printf '%s\n' "SET synchronous_commit = off;" "CALL public.bench_build_b($B_ROWS);" | psql_p ;;
        c) printf '%s\n' "SET synchronous_commit = off;" \
            "CALL public.bench_build_c($C_ROWS, $C_ROUNDS, $C_BATCH);" | psql_p ;;
        d) printf '%s\n' "SET synchronous_commit = off;" "CALL public.bench_build_d($D_TXNS, $D_ROWS);" | psql_p ;;
    esac
}

# wait_slot SLOT: true once SLOT has confirmed $TARGET (bounded).
wait_slot() {
    [[ $(q_p "SELECT public.bench_wait_slot('$1', '$TARGET', $DRAIN_TIMEOUT)") == t ]]
}

# record WORKLOAD CONSUMER REP SECONDS SAMPLER-LINE
record() {
    local -a f
    read -ra f <<<"$5"
    echo "$1 $2 $3 $4 ${f[3]} ${f[4]}" >>"$RESULTS"
}

# record_size WORKLOAD CONSUMER REP QUERY: after a drain (its timing is
# done), what the consumer's copy takes on disk: QUERY returns "bytes
# units" (pgrpl: the subscription's change and transaction partitions,
# indexes and TOAST included, and the changes captured; built-in: the
# replica table likewise, and its rows).  Appended to $SIZES; prints bytes
# per unit.
record_size() {
    local line
    line=$(q_s "$4")
    echo "$1 $2 $3 $line" >>"$SIZES"
    awk '{ printf "%.0f", ($2 > 0 ? $1 / $2 : 0) }' <<<"$line"
}

# tcp_segments: "data-segments bytes" the primary has sent so far on its
# busiest established TCP connection (the walsender serving the drain that
# just reached its target), from `ss -ti`; nothing without ss or over the
# Unix socket.  The walsender sends every message with its own send(); how
# many leave together depends on the consumer (see print_segments).
tcp_segments() {
    [[ $1 == tcp ]] && command -v ss >/dev/null 2>&1 || return 0
    ss -tinH state established "( sport = :$PPORT )" 2>/dev/null |
        awk '{ b = 0; n = 0
               for (i = 1; i <= NF; i++) {
                   if ($i ~ /^bytes_sent:/) { split($i, x, ":"); b = x[2] }
                   if ($i ~ /^data_segs_out:/) { split($i, x, ":"); n = x[2] }
               }
               if (b > best) { best = b; segs = n } }
             END { if (best > 0) print segs, best }' || true
}

# "CPU: consumer X s, walsender Y s" of a sampler line
cpu_note() { awk '{ printf "CPU s: consumer %s, walsender %s", $4, $5 }' <<<"$1"; }

drain_ceiling() {
    local w=$1 t=$2 r=$3 t0 t1 rc=0 s
    local k=${w}_$t
    checkpoint_both
    start_sampler "rl_${k}_$r" "pgrep -x pg_recvlogical" "ceiling-$k-$r"
    t0=$(now)
    timeout "$DRAIN_TIMEOUT" runuser -u "$PGRPL_PG_USER" -- "$PGRPL_PG_BIN/pg_recvlogical" \
        -h "$(host_of "$t")" -p "$PPORT" -d postgres -U postgres --slot="rl_${k}_$r" --start \
        --endpos="$TARGET" --no-loop -o proto_version=1 -o publication_names=bench_pub \
        -f /dev/null || rc=$?
    t1=$(now)
    stop_sampler
    s=$SAMPLE
    ((rc == 0)) || pgrpl_die "pg_recvlogical on rl_${k}_$r exited with status $rc"
    record "$k" ceiling "$r" "$(elapsed "$t0" "$t1")" "$s"
    log "$t ceiling  rep $r: $(elapsed "$t0" "$t1") s (load $(load1); $(cpu_note "$s"); slot at $(q_p "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'rl_${k}_$r'"))"
}

drain_builtin() {
    local w=$1 t=$2 r=$3 t0 t1 got want s size wal0 wal seg
    local k=${w}_$t
    q_s "TRUNCATE public.bench_$w" >/dev/null
    checkpoint_both
    wal0=$(q_s "SELECT pg_current_wal_insert_lsn()")
    t0=$(now)
    q_s "ALTER SUBSCRIPTION bi_${k}_$r ENABLE" >/dev/null
    start_sampler "bi_${k}_$r" "q_s \"SELECT pid FROM pg_stat_subscription WHERE subname = 'bi_${k}_$r' AND relid IS NULL AND pid IS NOT NULL\"" "builtin-$k-$r"
    if ! wait_slot "bi_${k}_$r"; then
        stop_sampler
        q_s "SELECT * FROM pg_stat_subscription_stats" >&2 || true
        pgrpl_die "built-in subscription bi_${k}_$r did not reach $TARGET in ${DRAIN_TIMEOUT}s"
    fi
    t1=$(now)
    seg=$(tcp_segments "$t")
    [[ -z $seg ]] || echo "$k builtin $r $seg" >>"$SEGS"
    wal=$(q_s "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal0')")
    echo "$k builtin $r $wal" >>"$WALS"
    stop_sampler
    s=$SAMPLE
    q_s "ALTER SUBSCRIPTION bi_${k}_$r DISABLE" >/dev/null
    record "$k" builtin "$r" "$(elapsed "$t0" "$t1")" "$s"
    got=$(q_s "${W_CHECK[$w]}")
    want=$(q_p "${W_CHECK[$w]}")
    [[ $got == "$want" ]] || pgrpl_die "built-in replica of bench_$w differs: $got, primary $want"
    size=$(record_size "$k" builtin "$r" "SELECT pg_total_relation_size('public.bench_$w') || ' ' || count(*)
                                          FROM public.bench_$w")
    log "$t built-in rep $r: $(elapsed "$t0" "$t1") s (load $(load1); $(cpu_note "$s"); replica = primary: $got;" \
        "$size B/row; subscriber WAL $wal B)"
}

drain_pgrpl() {
    local w=$1 t=$2 r=$3 t0 t1 n s size wal0 wal seg
    local k=${w}_$t
    local sub=pg_${k}_$r
    q_s "TRUNCATE pgrpl.change, pgrpl.transaction" >/dev/null
    checkpoint_both
    wal0=$(q_s "SELECT pg_current_wal_insert_lsn()")
    t0=$(now)
    q_s "SELECT pgrpl.enable_subscription('$sub')" >/dev/null
    start_sampler "$sub" "q_s \"SELECT pid FROM pgrpl.stat_subscription WHERE name = '$sub' AND pid IS NOT NULL\"" "pgrpl-$k-$r"
    if ! wait_slot "$sub"; then
        stop_sampler
        q_s "SELECT * FROM pgrpl.stat_subscription WHERE name = '$sub'" >&2 || true
        pgrpl_die "pgrpl subscription $sub did not reach $TARGET in ${DRAIN_TIMEOUT}s"
    fi
    t1=$(now)
    seg=$(tcp_segments "$t")
    [[ -z $seg ]] || echo "$k pgrpl $r $seg" >>"$SEGS"
    wal=$(q_s "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal0')")
    echo "$k pgrpl $r $wal" >>"$WALS"
    stop_sampler
    s=$SAMPLE
    q_s "SELECT pgrpl.disable_subscription('$sub')" >/dev/null
    record "$k" pgrpl "$r" "$(elapsed "$t0" "$t1")" "$s"
    echo "$k $r $s" >>"$MEM"
    n=$(q_s "SELECT count(*) FROM pgrpl.change c JOIN pgrpl.subscription s USING (sub_id)
             WHERE s.sub_name = '$sub'")
    [[ $n == "${W_CHANGES[$w]}" ]] || pgrpl_die "pgrpl captured $n changes of bench_$w, expected ${W_CHANGES[$w]}"
    size=$(record_size "$k" pgrpl "$r" "SELECT s.bytes || ' ' || $n FROM public.bench_log_size(
                                          (SELECT sub_id FROM pgrpl.subscription WHERE sub_name = '$sub')) s")
    log "$t pgrpl    rep $r: $(elapsed "$t0" "$t1") s (load $(load1); $(cpu_note "$s"); $n changes;" \
        "$size B/change; subscriber WAL $wal B; worker peak RssAnon $(awk '{ printf "%.1f", $2 / 1024 }' <<<"$s") MB)"
}

run_workload() {
    local w=$1 t0 r
    pgrpl_banner "throughput ${W_TITLE[$w]}: ${W_CHANGES[$w]} changes, $REPS drain(s) per consumer and transport ($TRANSPORTS)"
    q_p "TRUNCATE public.bench_$w" >/dev/null
    q_s "TRUNCATE public.bench_$w" >/dev/null
    create_consumers "$w"
    log "slots created: $(q_p "SELECT string_agg(slot_name, ' ' ORDER BY slot_name) FROM pg_replication_slots")"
    t0=$(now)
    build_backlog "$w"
    q_p "CHECKPOINT" >/dev/null
    TARGET=$(q_p "SELECT pg_current_wal_lsn()")
    log "backlog built in $(elapsed "$t0" "$(now)") s; target LSN $TARGET," \
        "$(q_p "SELECT pg_size_pretty(pg_wal_lsn_diff('$TARGET', min(restart_lsn))) FROM pg_replication_slots") of WAL"
    for ((r = 1; r <= REPS; r++)); do
        for t in $TRANSPORTS; do
            for c in $CONSUMERS; do "drain_$c" "$w" "$t" "$r"; done
        done
    done
    drop_consumers "$w"
}

# ------------------------------------------------------------ streaming --

# The subscriber-visible check of a streamed drain.
stream_visible() {
    case $1 in
        builtin) [[ $(q_s "SELECT count(*) FROM public.bench_s") == "$B_ROWS" ]] ;;
        pgrpl) [[ $(q_s "SELECT count(*) FROM pgrpl.change c JOIN pgrpl.subscription s USING (sub_id)
                          JOIN pgrpl.transaction t USING (sub_id, txn_id)
                          WHERE s.sub_name = '$2' AND t.commit_lsn IS NOT NULL") == "$B_ROWS" ]] ;;
    esac
}

# stream_drain CONSUMER REP: drain the one-transaction backlog; records
# "s CONSUMER REP seconds consumer-CPU walsender-CPU" and the slot's spill.
stream_drain() {
    local c=$1 r=$2 t0 t1 s name spill pidq
    if [[ $c == builtin ]]; then
        name=bs_$r
        q_s "TRUNCATE public.bench_s" >/dev/null
        pidq="q_s \"SELECT pid FROM pg_stat_subscription WHERE subname = '$name' AND relid IS NULL AND pid IS NOT NULL\""
    else
        name=ps_$r
        q_s "TRUNCATE pgrpl.change, pgrpl.transaction" >/dev/null
        pidq="q_s \"SELECT pid FROM pgrpl.stat_subscription WHERE name = '$name' AND pid IS NOT NULL\""
    fi
    checkpoint_both
    t0=$(now)
    if [[ $c == builtin ]]; then q_s "ALTER SUBSCRIPTION $name ENABLE" >/dev/null
    else q_s "SELECT pgrpl.enable_subscription('$name')" >/dev/null; fi
    start_sampler "$name" "$pidq" "stream-$c-$r"
    wait_slot "$name" || { stop_sampler; pgrpl_die "$c consumer $name did not reach $TARGET in ${DRAIN_TIMEOUT}s"; }
    t1=$(now)
    stop_sampler
    s=$SAMPLE
    if [[ $c == builtin ]]; then q_s "ALTER SUBSCRIPTION $name DISABLE" >/dev/null
    else q_s "SELECT pgrpl.disable_subscription('$name')" >/dev/null; fi
    stream_visible "$c" "$name" || pgrpl_die "$c consumer $name does not hold the $B_ROWS rows"
    spill=$(q_p "SELECT spill_bytes || ' ' || stream_bytes FROM pg_stat_replication_slots WHERE slot_name = '$name'")
    record s "$c" "$r" "$(elapsed "$t0" "$t1")" "$s"
    echo "s $r $s" >>"$MEM"
    echo "$c $r $spill" >>"$BENCH/spill"
    log "$c rep $r: $(elapsed "$t0" "$t1") s ($(cpu_note "$s"); spill/stream bytes $spill;" \
        "peak RssAnon $(awk '{ printf "%.1f", $2 / 1024 }' <<<"$s") MB)"
}

# stream_live CONSUMER: the consumer streams; commit the transaction on the
# primary and time COMMIT returned -> every row visible on the subscriber.
stream_live() {
    local c=$1 name t_commit t_vis i log_off arrived after
    q_p "TRUNCATE public.bench_s" >/dev/null
    if [[ $c == builtin ]]; then
        name=bs_live
        q_s "TRUNCATE public.bench_s" >/dev/null
        q_s_quiet "CREATE SUBSCRIPTION $name CONNECTION '$STREAM_CONNINFO' PUBLICATION bench_spub
                   WITH (copy_data = false, streaming = on, slot_name = '$name')"
        q_p "SELECT public.bench_wait_slot('$name', pg_current_wal_lsn(), 60)" >/dev/null
    else
        name=ps_live
        q_s "TRUNCATE pgrpl.change, pgrpl.transaction" >/dev/null
        q_s "SELECT pgrpl.create_subscription('$name', '$STREAM_CONNINFO', ARRAY['bench_spub'], copy_data => false)" >/dev/null
        q_s "SELECT pgrpl.wait_for_lsn('$name', '$(q_p "SELECT pg_current_wal_lsn()")', '60s')" >/dev/null
    fi
    checkpoint_both
    # Both consumers log (DEBUG1) when a streamed transaction's commit
    # arrives (built-in) or how long after it the rows became visible (pgrpl).
    q_s "ALTER SYSTEM SET log_min_messages = debug1" >/dev/null
    q_s "SELECT pg_reload_conf()" >/dev/null
    log_off=$(stat -c %s "$SUBSCRIBER.log")
    printf '%s\n' "SET synchronous_commit = off;" "CALL public.bench_build_s($B_ROWS);" | psql_p
    t_commit=$(now)
    for ((i = 0; i < DRAIN_TIMEOUT * 100; i++)); do
        if [[ $c == builtin ]]; then
            [[ $(q_s "SELECT EXISTS (SELECT 1 FROM public.bench_s WHERE id = $B_ROWS)") == t ]] && break
        else
            [[ $(q_s "SELECT EXISTS (SELECT 1 FROM pgrpl.transaction t JOIN pgrpl.subscription s USING (sub_id)
                                      WHERE s.sub_name = '$name' AND t.commit_lsn IS NOT NULL)") == t ]] && break
        fi
        sleep 0.01
    done
    t_vis=$(now)
    stream_visible "$c" "$name" || pgrpl_die "$c consumer $name does not hold the $B_ROWS rows"
    q_s "ALTER SYSTEM RESET log_min_messages" >/dev/null
    q_s "SELECT pg_reload_conf()" >/dev/null
    if [[ $c == builtin ]]; then
        # the log line's time (ms) to the moment the last row was seen
        arrived=$(tail -c +$((log_off + 1)) "$SUBSCRIBER.log" |
            grep 'received commit for streamed transaction' | tail -n 1 | cut -d' ' -f1-3)
        after=$([[ -n $arrived ]] && elapsed "$(date -d "$arrived" +%s.%N)" "$t_vis" || echo "?")
    else
        after=$(tail -c +$((log_off + 1)) "$SUBSCRIBER.log" |
            sed -n 's/.*streamed transactions visible \([0-9.]*\) ms after.*/\1/p' | tail -n 1)
        after=$([[ -n $after ]] && awk -v m="$after" 'BEGIN { printf "%.3f", m / 1000 }' || echo "?")
    fi
    LIVE_OUT+=$(printf '%-9s commit -> visible %8.3f s; STREAM COMMIT arrived -> visible %s s\n' \
        "$([[ $c == builtin ]] && echo built-in || echo pgrpl)" "$(elapsed "$t_commit" "$t_vis")" "$after")$'\n'
    if [[ $c == builtin ]]; then q_s_quiet "DROP SUBSCRIPTION $name" >/dev/null
    else q_s "SELECT pgrpl.drop_subscription('$name')" >/dev/null; fi
}

LIVE_OUT=''
run_streaming() {
    local r c t0
    STREAM_CONNINFO="$CONNINFO options=-clogical_decoding_work_mem=$STREAM_LDWM"
    pgrpl_banner "streaming: one transaction of $B_ROWS inserts, logical_decoding_work_mem = $STREAM_LDWM"
    for sql in "CREATE TABLE IF NOT EXISTS public.bench_s (LIKE public.bench_b INCLUDING ALL)"; do
        q_p "$sql" >/dev/null
        q_s "$sql" >/dev/null
    done
    q_p "CREATE PUBLICATION bench_spub FOR TABLE public.bench_s" >/dev/null
    q_p "CREATE PROCEDURE public.bench_build_s(nrows integer) LANGUAGE sql AS \$\$
           INSERT INTO public.bench_s SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, nrows) g \$\$" >/dev/null
    : >"$BENCH/spill"
    for ((r = 1; r <= REPS; r++)); do
        q_s_quiet "CREATE SUBSCRIPTION bs_$r CONNECTION '$STREAM_CONNINFO' PUBLICATION bench_spub
                   WITH (enabled = false, copy_data = false, streaming = on, slot_name = 'bs_$r')"
        q_s "SELECT pgrpl.create_subscription('ps_$r', '$STREAM_CONNINFO', ARRAY['bench_spub'], enabled => false, copy_data => false)" >/dev/null
    done
    t0=$(now)
    printf '%s\n' "SET synchronous_commit = off;" "CALL public.bench_build_s($B_ROWS);" | psql_p
    q_p "CHECKPOINT" >/dev/null
    TARGET=$(q_p "SELECT pg_current_wal_lsn()")
    log "backlog built in $(elapsed "$t0" "$(now)") s; target LSN $TARGET"
    for ((r = 1; r <= REPS; r++)); do
        for c in builtin pgrpl; do stream_drain "$c" "$r"; done
    done
    for ((r = 1; r <= REPS; r++)); do
        q_s_quiet "DROP SUBSCRIPTION bs_$r" >/dev/null
        q_s "SELECT pgrpl.drop_subscription('ps_$r')" >/dev/null
    done
    for c in builtin pgrpl; do stream_live "$c"; done
}

print_streaming() {
    printf '%-10s %9s %11s %13s %13s %14s %16s\n' consumer "median s" "changes/s" "consumer CPU" "walsndr CPU" \
        "spill bytes" "peak RssAnon MB"
    awk -v n="$B_ROWS" -v spillf="$BENCH/spill" -v memf="$MEM" "$AWK_MEDIAN"'
        function median(arr, k,   i, m, a) {
            m = c[k]; for (i = 1; i <= m; i++) a[i] = arr[k, i]
            return med(a, m)
        }
        $1 == "s" { c[$2]++; v[$2, c[$2]] = $4; u[$2, c[$2]] = $5; x[$2, c[$2]] = $6 }
        END {
            while ((getline line < spillf) > 0) { split(line, f, " "); if (f[3] > sp[f[1]]) sp[f[1]] = f[3] }
            while ((getline line < memf) > 0) { split(line, f, " "); if (f[1] == "s" && f[4] > anon) anon = f[4] }
            split("builtin pgrpl", order, " ")
            for (o = 1; o <= 2; o++) {
                k = order[o]; if (!(k in c)) continue
                md[k] = median(v, k)
                printf "%-10s %9.2f %11.0f %12.2fs %12.2fs %14d %16s\n", (k == "builtin" ? "built-in" : k), md[k], n / md[k], \
                    median(u, k), median(x, k), sp[k], (k == "pgrpl" ? sprintf("%.1f", anon / 1024) : "-")
            }
            if (("builtin" in md) && ("pgrpl" in md))
                printf "pgrpl/built-in: %.1f%% (rate)\n", 100 * md["builtin"] / md["pgrpl"]
        }' "$RESULTS"
    printf '%s' "$LIVE_OUT"
}

# ------------------------------------------------------------ snapshot --

# Wait on the subscriber until QUERY returns t (polled there every 20 ms,
# bounded by the drain timeout).
wait_sub_true() {
    [[ $(q_s "CALL public.bench_wait_true(\$q\$$1\$q\$, $DRAIN_TIMEOUT)") == t ]]
}

# snap_one CONSUMER REP: copy public.bench_snap with a new subscription,
# timed from its creation until the copy is complete; records
# "snap CONSUMER REP seconds consumer-CPU walsender-CPU" and the memory.
snap_one() {
    local c=$1 r=$2 t0 t1 name s n
    name=${c}_snap_$r
    checkpoint_both
    if [[ $c == builtin ]]; then
        q_s "TRUNCATE public.bench_snap" >/dev/null
        t0=$(now)
        q_s_quiet "CREATE SUBSCRIPTION $name CONNECTION '$CONNINFO' PUBLICATION bench_snappub
                   WITH (slot_name = '$name')" >/dev/null
        start_sampler "$name" "q_s \"SELECT pid FROM pg_stat_subscription WHERE subname = '$name' AND relid IS NOT NULL AND pid IS NOT NULL\"" "snap-$c-$r"
        wait_sub_true "SELECT count(*) = 1 FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid
                        WHERE s.subname = '$name' AND sr.srsubstate = 'r'" ||
            { stop_sampler; pgrpl_die "built-in table sync of $name not ready in ${DRAIN_TIMEOUT}s"; }
        t1=$(now)
        stop_sampler
        n=$(q_s "SELECT count(*) FROM public.bench_snap")
        q_s_quiet "DROP SUBSCRIPTION $name" >/dev/null
    else
        q_s "TRUNCATE pgrpl.change, pgrpl.transaction" >/dev/null
        t0=$(now)
        q_s "SELECT pgrpl.create_subscription('$name', '$CONNINFO', ARRAY['bench_snappub'])" >/dev/null
        start_sampler "$name" "q_s \"SELECT pid FROM pgrpl.stat_subscription WHERE name = '$name' AND pid IS NOT NULL\"" "snap-$c-$r"
        wait_sub_true "SELECT state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = '$name'" ||
            { stop_sampler; pgrpl_die "pgrpl copy of $name not done in ${DRAIN_TIMEOUT}s"; }
        t1=$(now)
        stop_sampler
        n=$(q_s "SELECT rows_copied FROM pgrpl.stat_snapshot WHERE subscription = '$name'")
        q_s "SELECT pgrpl.drop_subscription('$name')" >/dev/null
    fi
    s=$SAMPLE
    [[ $n == "$S_ROWS" ]] || pgrpl_die "$c copied $n rows of bench_snap, expected $S_ROWS"
    record snap "$c" "$r" "$(elapsed "$t0" "$t1")" "$s"
    echo "snap $c $r $s" >>"$MEM"
    log "$c copy $r: $(elapsed "$t0" "$t1") s ($n rows; peak RssAnon $(awk '{ printf "%.1f", $2 / 1024 }' <<<"$s") MB)"
}

run_snapshot() {
    local r c t0
    pgrpl_banner "snapshot: a table of $S_ROWS rows copied, $S_REPS time(s) per consumer"
    for sql in "CREATE TABLE IF NOT EXISTS public.bench_snap (LIKE public.bench_b INCLUDING ALL)"; do
        q_p "$sql" >/dev/null
        q_s "$sql" >/dev/null
    done
    q_p "TRUNCATE public.bench_snap" >/dev/null
    t0=$(now)
    q_p "INSERT INTO public.bench_snap SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, $S_ROWS) g" >/dev/null
    q_p "VACUUM ANALYZE public.bench_snap" >/dev/null
    q_p "CREATE PUBLICATION bench_snappub FOR TABLE public.bench_snap" >/dev/null
    log "table filled in $(elapsed "$t0" "$(now)") s ($(q_p "SELECT pg_size_pretty(pg_table_size('public.bench_snap'))"))"
    for ((r = 1; r <= S_REPS; r++)); do
        for c in builtin pgrpl; do snap_one "$c" "$r"; done
    done
}

print_snapshot() {
    printf '%-10s %9s %11s %17s %14s\n' consumer "median s" "rows/s" "peak RssAnon MB" "copier CPU s"
    awk -v n="$S_ROWS" -v memf="$MEM" "$AWK_MEDIAN"'
        function median(arr, k,   i, m, a) {
            m = c[k]; for (i = 1; i <= m; i++) a[i] = arr[k, i]
            return med(a, m)
        }
        $1 == "snap" { c[$2]++; v[$2, c[$2]] = $4; cpu[$2, c[$2]] = $5 }
        END {
            while ((getline line < memf) > 0) { split(line, f, " "); if (f[1] == "snap" && f[5] > anon[f[2]]) anon[f[2]] = f[5] }
            split("builtin pgrpl", order, " ")
            for (o = 1; o <= 2; o++) {
                k = order[o]; if (!(k in c)) continue
                md[k] = median(v, k)
                printf "%-10s %9.2f %11.0f %17.1f %14.2f\n", (k == "builtin" ? "built-in" : k), md[k], n / md[k], anon[k] / 1024, median(cpu, k)
            }
            if (("builtin" in md) && ("pgrpl" in md))
                printf "pgrpl/built-in: %.1f%% (rate)\n", 100 * md["builtin"] / md["pgrpl"]
        }' "$RESULTS"
}

# ------------------------------------------------------------- latency --

LATENCY_OUT=''

run_latency() {
    local sid lsn
    pgrpl_banner "latency: $LAT_N single-row transactions at ~$LAT_RATE/s per consumer"
    q_p "TRUNCATE public.bench_lat" >/dev/null
    q_s "TRUNCATE public.bench_lat" >/dev/null

    q_s "SELECT pgrpl.create_subscription('pg_lat', '$CONNINFO', ARRAY['bench_pub'], copy_data => false)" >/dev/null
    lsn=$(q_p "SELECT pg_current_wal_lsn()")
    [[ $(q_s "SELECT pgrpl.wait_for_lsn('pg_lat', '$lsn', '60 s')") == t ]] ||
        pgrpl_die "pgrpl subscription pg_lat did not start streaming"
    sid=$(q_s "SELECT sub_id FROM pgrpl.subscription WHERE sub_name = 'pg_lat'")
    q_s "CREATE UNLOGGED TABLE public.bench_lat_result (consumer text, ms float8)" >/dev/null
    q_s "CALL public.bench_latency('pgrpl', '$CONNINFO', 1, $LAT_N, $LAT_RATE, $sid)" >/dev/null
    q_s "SELECT pgrpl.drop_subscription('pg_lat')" >/dev/null
    log "pgrpl done"

    q_s_quiet "CREATE SUBSCRIPTION bi_lat CONNECTION '$CONNINFO' PUBLICATION bench_pub
               WITH (copy_data = false, slot_name = 'bi_lat')"
    lsn=$(q_p "SELECT pg_current_wal_lsn()")
    [[ $(q_p "SELECT public.bench_wait_slot('bi_lat', '$lsn', 60)") == t ]] ||
        pgrpl_die "built-in subscription bi_lat did not start streaming"
    q_s "CALL public.bench_latency('builtin', '$CONNINFO', 1000001, $LAT_N, $LAT_RATE, 0)" >/dev/null
    q_s_quiet "DROP SUBSCRIPTION bi_lat" >/dev/null
    log "built-in done"

    LATENCY_OUT=$(psql_s -P footer=off -c "
        SELECT consumer, count(*) AS rows,
               round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p99_ms,
               round(min(ms)::numeric, 2) AS min_ms, round(max(ms)::numeric, 2) AS max_ms
          FROM bench_lat_result GROUP BY consumer ORDER BY consumer DESC")
    echo "$LATENCY_OUT"
}

# ------------------------------------------------------------- queries --

QUERIES_OUT='' RELQ_OUT='' PURGE_OUT='' PLANS_OUT='' PLAN_READS='' FILLED_SID=''

# fill_log SUBSCRIPTION ROWS KEYS: a disabled subscription whose log is
# queries_fill.sql's synthetic one (ROWS changes of public.t over KEYS
# keys, and Q_SMALL_CHANGES of public.small), then VACUUM ANALYZE of its
# partitions.  Sets FILLED_SID.  Only the leaves are analyzed, as
# autovacuum would: it never analyzes partitioned tables, so the parents
# have no statistics in a real installation either.
fill_log() {
    local sub=$1 rows=$2 keys=$3 sid t0 leaves
    q_s "SELECT pgrpl.create_subscription('$sub', '$CONNINFO', ARRAY['bench_pub'],
                                          enabled => false, copy_data => false)" >/dev/null
    sid=$(q_s "SELECT sub_id FROM pgrpl.subscription WHERE sub_name = '$sub'")
    t0=$(now)
    # one session, in commit order: the heap is clustered like a real log
    psql_s -v sid="$sid" -v nrows="$rows" -v keys="$keys" -v small="$Q_SMALL_CHANGES" \
        -f "$BENCH_SQL/queries_fill.sql" 2>&1 | sed -e 's/^psql:[^ ]* NOTICE:  /    /'
    log "$sub: filled in $(elapsed "$t0" "$(now)") s"
    t0=$(now)
    leaves=$(q_s "SELECT string_agg(l.rel::text, ', ') FROM public.bench_log_leaves($sid) l")
    q_s "VACUUM (ANALYZE) $leaves" >/dev/null
    log "$sub: VACUUM ANALYZE of its partitions in $(elapsed "$t0" "$(now)") s"
    FILLED_SID=$sid
}

# SET auto_explain up to log every statement's plan as a NOTICE, those
# inside functions too.
auto_explain_on() {
    echo "LOAD 'auto_explain';"
    echo "SET auto_explain.log_min_duration = 0;"
    echo "SET auto_explain.log_analyze = on;"
    echo "SET auto_explain.log_buffers = on;"
    echo "SET auto_explain.log_nested_statements = on;"
    echo "SET auto_explain.log_level = notice;"
    echo "SET client_min_messages = notice;"
}

# Filter the output of psql -At with auto_explain on: every "==== name:
# query" header line, then the plans of the statements that read the log's
# partitions (the lookups of names and arguments are left out), each
# followed by the rows its scans of change and transaction partitions
# returned or filtered out (all loops).  The totals per header go to the
# file $1.
plan_filter() {
    local reads=$1
    sed -e 's/^NOTICE:  //' | awk -v reads="$reads" '
        # rows a plan line says its node produced (all loops)
        function node_rows(s,   r) {
            if (s !~ /\(actual (time=[^ ]* )?rows=/) return 0
            sub(/.*\(actual (time=[^ ]* )?rows=/, "", s)
            r = s + 0
            sub(/^[0-9]+ loops=/, "", s)
            loops = s + 0
            return r * loops
        }
        # a run of partition scans that never ran (pruned at run time)
        # becomes one line
        function skipped_done() {
            if (nskip > 0) printf "%s->  (%d partition scans, never executed)\n", skipind, nskip
            nskip = 0
        }
        function flush(   n, lines, i, ch, tx, kind, x, skipping) {
            if (buf != "" && buf ~ / on (change|transaction)_[0-9]+_[0-9]+ /) {
                n = split(buf, lines, "\n")
                ch = 0; tx = 0; kind = ""; nskip = 0; skipping = 0
                for (i = 1; i <= n; i++) {
                    if (lines[i] ~ /\(cost=/) {
                        if (lines[i] ~ / on (change|transaction)_[0-9]+_[0-9]+ .*\(never executed\)/) {
                            if (nskip == 0) { skipind = lines[i]; sub(/->.*/, "", skipind) }
                            nskip++; skipping = 1
                            continue
                        }
                        skipping = 0
                        skipped_done()
                        print lines[i]
                        kind = ""
                        if (lines[i] ~ / on change_[0-9]+_[0-9]+ /) kind = "ch"
                        else if (lines[i] ~ / on transaction_[0-9]+_[0-9]+ /) kind = "tx"
                        loops = 1
                        x = node_rows(lines[i])
                        if (kind == "ch") ch += x
                        if (kind == "tx") tx += x
                    } else if (skipping) {
                        continue
                    } else {
                        print lines[i]
                        if (kind != "" && lines[i] ~ /Rows Removed by (Filter|Index Recheck): /) {
                            x = lines[i]; sub(/.*: /, "", x)
                            if (kind == "ch") ch += x * loops; else tx += x * loops
                        }
                    }
                }
                skipped_done()
                printf "  => rows read from change partitions: %d, from transaction partitions: %d\n", ch, tx
                tot_ch += ch; tot_tx += tx
            }
            buf = ""
        }
        function header_done() {
            if (name != "") printf "%-52s %10d %10d\n", name, tot_ch, tot_tx > reads
            tot_ch = 0; tot_tx = 0
        }
        /^==== /      { flush(); header_done(); print; name = substr($0, 6); sub(/: SELECT .*/, "", name); next }
        /^duration: / { flush(); buf = $0; next }
        /^[0-9]*$/    { next }
        { buf = buf "\n" $0 }
        END { flush(); header_done() }'
}

run_queries() {
    local sid sid_small t0 after1000 after2000 key msg_i msg_r x i sql mid want before after
    pgrpl_banner "queries: synthetic logs qbench ($((Q_ROWS + Q_SMALL_CHANGES)) changes) and qsmall ($Q_SMALL_LOG)"
    log "pgrpl.partition_size = $(q_s "SHOW pgrpl.partition_size")"
    fill_log qbench "$Q_ROWS" "$Q_KEYS"
    sid=$FILLED_SID
    fill_log qsmall "$Q_SMALL_ROWS" "$Q_SMALL_KEYS"
    sid_small=$FILLED_SID
    psql_s -P footer=off -c "
        SELECT s.sub_name AS log, l.rel AS partition, c.reltuples::bigint AS rows_estimate,
               pg_size_pretty(pg_relation_size(l.rel)) AS heap,
               pg_size_pretty(pg_indexes_size(l.rel)) AS indexes,
               pg_size_pretty(pg_total_relation_size(l.rel) - pg_relation_size(l.rel)
                              - pg_indexes_size(l.rel)) AS toast_and_maps
          FROM pgrpl.subscription s, LATERAL public.bench_log_leaves(s.sub_id) l
          JOIN pg_class c ON c.oid = l.rel
         WHERE s.sub_id IN ($sid, $sid_small)
         ORDER BY s.sub_name, l.tab, l.part"

    # after_lsn values with ~1000 / ~2000 rows after them (the commit LSN
    # of the transaction holding the 1001st / 2001st newest change), and a
    # key with history (12345 when the key space has it).
    for x in 1000 2000; do
        printf -v "after$x" '%s' "$(q_s "
            SELECT s.commit_lsn
              FROM (SELECT t.commit_lsn, sum(t.changes) OVER (ORDER BY t.commit_lsn DESC) AS n
                      FROM (SELECT t.commit_lsn, t.changes FROM pgrpl.transaction t
                             WHERE t.sub_id = $sid AND t.commit_lsn IS NOT NULL
                             ORDER BY t.commit_lsn DESC LIMIT $x + 1) t) s
             WHERE s.n > $x ORDER BY s.commit_lsn DESC LIMIT 1")"
    done
    key=$((Q_KEYS >= 12345 ? 12345 : Q_KEYS / 2))

    # pgoutput messages captured from the primary for pgrpl.decode
    q_p "SELECT 1 FROM pg_create_logical_replication_slot('bench_dbg', 'pgoutput')" >/dev/null
    q_p "INSERT INTO public.bench_lat (id, pad) VALUES (-1, 'a row to decode')" >/dev/null
    msg_r=$(q_p "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('bench_dbg',
                 NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')
                 WHERE get_byte(data, 0) = ascii('R') LIMIT 1")
    msg_i=$(q_p "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('bench_dbg',
                 NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')
                 WHERE get_byte(data, 0) = ascii('I') LIMIT 1")
    q_p "SELECT pg_drop_replication_slot('bench_dbg')" >/dev/null
    q_p "DELETE FROM public.bench_lat WHERE id = -1" >/dev/null
    [[ -n $msg_i && -n $msg_r ]] || pgrpl_die "could not capture pgoutput messages to decode"
    q_s "CREATE UNLOGGED TABLE bench_msg AS
         SELECT CASE WHEN g % 2 = 0 THEN '\\x$msg_i'::bytea ELSE '\\x$msg_r'::bytea END AS m,
                g % 2 = 0 AS is_insert
           FROM generate_series(1, 10000) g" >/dev/null
    log "decode sample: INSERT $(q_s "SELECT pgrpl.decode('\\x$msg_i'::bytea)")"

    local -a names=(
        "changes(after_lsn => newest ~1000)"
        "changes(after_lsn => newest ~2000, max_rows => 1000)"
        "changes(max_rows => 1000) from the start"
        "row_history('public.t', '{\"id\": $key}')"
        "decode(INSERT message), 1 call"
        "decode(RELATION message), 1 call"
        "decode, 10000 calls (INSERT/RELATION)"
        "changes(after_lsn => newest ~1000), jit off"
        "changes(max_rows => 1000) from start, jit off"
    )
    local -a queries=(
        "SELECT * FROM pgrpl.changes('qbench', after_lsn => '$after1000')"
        "SELECT * FROM pgrpl.changes('qbench', after_lsn => '$after2000', max_rows => 1000)"
        "SELECT * FROM pgrpl.changes('qbench', max_rows => 1000)"
        "SELECT * FROM pgrpl.row_history('qbench', 'public.t', '{\"id\": $key}')"
        "SELECT 1 FROM (SELECT m FROM bench_msg WHERE is_insert LIMIT 1) x WHERE pgrpl.decode(m) IS NOT NULL"
        "SELECT 1 FROM (SELECT m FROM bench_msg WHERE NOT is_insert LIMIT 1) x WHERE pgrpl.decode(m) IS NOT NULL"
        "SELECT 1 FROM bench_msg WHERE pgrpl.decode(m) IS NOT NULL"
        "SELECT * FROM pgrpl.changes('qbench', after_lsn => '$after1000')"
        "SELECT * FROM pgrpl.changes('qbench', max_rows => 1000)"
    )
    local -a jit_off=(false false false false false false false true true)
    # One session: every query warm-up + QUERY_RUNS timed runs (plpgsql
    # caches its plans per session, as a client's connection would).
    sql="CREATE TEMP TABLE bench_q (i int, name text, q text, jit_off boolean);"
    for i in "${!queries[@]}"; do
        sql+="INSERT INTO bench_q VALUES ($i, \$n\$${names[$i]}\$n\$, \$q\$${queries[$i]}\$q\$, ${jit_off[$i]});"
    done
    QUERIES_OUT=$(psql_s -P footer=off -c "$sql" -c "
        SELECT q.name AS query, t.nrows AS rows, round(t.avg_ms::numeric, 3) AS avg_ms,
               round(t.min_ms::numeric, 3) AS min_ms, round(t.max_ms::numeric, 3) AS max_ms,
               round(t.steady_ms::numeric, 3) AS steady_ms
          FROM bench_q q, LATERAL public.bench_time(q.q, $QUERY_RUNS, q.jit_off) t ORDER BY q.i" 2>&1)
    echo "$QUERIES_OUT"

    # Per-relation cost: public.small's 100 rows and 300 changes, in the
    # ~10k-change log and spread over the big one.  Each log in a session
    # of its own (plpgsql's choice between custom and generic plans learns
    # from the calls a session makes).
    local -a rnames=(
        "table_as_of('public.small')"
        "changes(relation => 'public.small')"
        "row_history('public.small', '{\"id\": 42}')"
    )
    local -a rqueries=(
        "SELECT * FROM pgrpl.table_as_of('%s', 'public.small')"
        "SELECT * FROM pgrpl.changes('%s', relation => 'public.small')"
        "SELECT * FROM pgrpl.row_history('%s', 'public.small', '{\"id\": 42}')"
    )
    q_s "CREATE UNLOGGED TABLE bench_rel (i int, name text, q text, log text, avg_ms float8,
                                          steady_ms float8, nrows bigint)" >/dev/null
    for i in "${!rqueries[@]}"; do
        q_s "INSERT INTO bench_rel (i, name, q) VALUES ($i, \$n\$${rnames[$i]}\$n\$, \$q\$${rqueries[$i]}\$q\$)" >/dev/null
    done
    for x in qsmall qbench; do
        q_s "INSERT INTO bench_rel
             SELECT r.i, r.name, r.q, '$x', t.avg_ms, t.steady_ms, t.nrows
               FROM bench_rel r, LATERAL public.bench_time(format(r.q, '$x'), $QUERY_RUNS) t
              WHERE r.log IS NULL ORDER BY r.i" >/dev/null
    done
    RELQ_OUT=$(psql_s -P footer=off -c "
        SELECT s.name AS query, s.nrows || CASE WHEN b.nrows <> s.nrows THEN ' / ' || b.nrows ELSE '' END AS rows,
               round(s.avg_ms::numeric, 3) AS small_avg_ms, round(b.avg_ms::numeric, 3) AS big_avg_ms,
               round((b.avg_ms / s.avg_ms)::numeric, 2) AS big_small_avg,
               round(s.steady_ms::numeric, 3) AS small_steady_ms,
               round(b.steady_ms::numeric, 3) AS big_steady_ms,
               round((b.steady_ms / s.steady_ms)::numeric, 2) AS big_small_steady
          FROM bench_rel s JOIN bench_rel b ON b.i = s.i AND b.log = 'qbench'
         WHERE s.log = 'qsmall' ORDER BY s.i")
    echo "$RELQ_OUT"

    # The plans the timed runs settled on: each query's warm-up and runs
    # again in one session, then once more under auto_explain.
    local -a pnames=("${names[@]:0:4}") pqueries=("${queries[@]:0:4}")
    for i in "${!rqueries[@]}"; do
        pnames+=("${rnames[$i]}, big log")
        # shellcheck disable=SC2059 # the query is the format
        pqueries+=("$(printf "${rqueries[$i]}" qbench)")
    done
    PLAN_READS=$BENCH/plan_reads
    : >"$PLAN_READS"
    PLANS_OUT=$(
        {
            for i in "${!pqueries[@]}"; do
                echo "SELECT count(*) FROM public.bench_time(\$q\$${pqueries[$i]}\$q\$, $QUERY_RUNS);"
            done
            auto_explain_on
            for i in "${!pqueries[@]}"; do
                echo "SELECT \$h\$==== ${pnames[$i]}: ${pqueries[$i]}\$h\$;"
                echo "SELECT count(*) FROM (${pqueries[$i]}) s;"
            done
        } | psql_s -At 2>&1 | plan_filter "$PLAN_READS"
    )
    pgrpl_banner "plans of the statements inside pgrpl's read functions that read the log (auto_explain, steady state)"
    printf '%s\n' "$PLANS_OUT"
    log "$(printf '%s\n' "$PLANS_OUT" | grep -c 'Index' || true) plan lines mention an index"

    # Purge of the older half of the big log (by LSN): the time, what it
    # removed and what the subscription's partitions take before and after.
    mid=$(q_s "SELECT min(t.commit_lsn) + round((max(t.commit_lsn) - min(t.commit_lsn)) / 2)
                 FROM pgrpl.transaction t WHERE t.sub_id = $sid")
    want=$(q_s "SELECT sum(t.changes) FROM pgrpl.transaction t
                 WHERE t.sub_id = $sid AND t.commit_lsn < '$mid'")
    before=$(q_s "SELECT pg_size_pretty(s.bytes) || ' in ' || s.partitions || ' partitions'
                    FROM public.bench_log_size($sid) s")
    q_s "CHECKPOINT" >/dev/null
    # pg_stat_force_next_flush(): the purge's dead tuples are in the
    # statistics before the next statement of the session reads them.
    after=$(psql_s -At <<SQL
SELECT clock_timestamp() AS t0 \gset
SELECT pgrpl.purge('qbench', '$mid'::pg_lsn) AS removed \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3) AS secs \gset
SELECT pg_stat_force_next_flush();
SELECT :removed || ' changes in ' || :secs || ' s; log after: ' || pg_size_pretty(s.bytes) || ' in '
       || s.partitions || ' partitions, ' || s.dead_tuples || ' dead tuples, '
       || public.bench_hidden_changes($sid) || ' change rows kept in the straddling partition'
       || ' without a transaction row'
  FROM public.bench_log_size($sid) s;
SQL
    )
    after=$(grep -v '^$' <<<"$after")
    PURGE_OUT="purge('qbench', '$mid'), the older half: removed $after
(expected $want changes; log before: $before)"
    echo "$PURGE_OUT"

    q_s "DROP TABLE bench_msg, bench_rel" >/dev/null
    q_s "SELECT pgrpl.drop_subscription('qbench')" >/dev/null
    q_s "SELECT pgrpl.drop_subscription('qsmall')" >/dev/null
}

# --------------------------------------------------------------- report --

print_throughput() {
    [[ -s $RESULTS ]] || return 0
    local w
    printf '%-40s %9s  %-9s %9s %11s %13s %13s  %s\n' workload changes consumer "median s" "changes/s" \
        "consumer CPU" "walsndr CPU" "runs (s)"
    for w in $WORKLOADS; do for t in $TRANSPORTS; do
        awk -v w="${w}_$t" -v title="${W_TITLE[$w]}, $t" -v n="${W_CHANGES[$w]}" "$AWK_MEDIAN"'
            $1 == w { t[$2] = t[$2] " " $4; c[$2]++; v[$2, c[$2]] = $4; u[$2, c[$2]] = $5; x[$2, c[$2]] = $6 }
            function median(arr, k,   i, m, a) {
                m = c[k]; for (i = 1; i <= m; i++) a[i] = arr[k, i]
                return med(a, m)
            }
            END {
                split("ceiling builtin pgrpl", order, " ")
                first = 1
                for (o = 1; o <= 3; o++) {
                    k = order[o]; if (!(k in c)) continue
                    md = median(v, k)
                    printf "%-40s %9s  %-9s %9.2f %11.0f %12.2fs %12.2fs %s\n", first ? title : "", first ? n : "", \
                        (k == "builtin" ? "built-in" : k), md, n / md, median(u, k), median(x, k), t[k]
                    first = 0
                }
            }' "$RESULTS"
    done; done
    echo
    printf '%-40s %14s %15s %15s %15s %16s %16s\n' workload pgrpl/ceiling pgrpl/built-in "walsndr-bound/s" "drain/walsndr" \
        "worker VmHWM MB" "peak RssAnon MB"
    for w in $WORKLOADS; do for t in $TRANSPORTS; do
        awk -v w="${w}_$t" -v title="${W_TITLE[$w]}, $t" -v n="${W_CHANGES[$w]}" -v memf="$MEM" "$AWK_MEDIAN"'
            function median(k,   i, m, a) {
                m = c[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
                return med(a, m)
            }
            $1 == w { c[$2]++; v[$2, c[$2]] = $4; if ($2 == "pgrpl") { cw++; x[cw] = $6 } }
            function median_ws(   i, a) {
                for (i = 1; i <= cw; i++) a[i] = x[i]
                return med(a, cw)
            }
            END {
                if (!("pgrpl" in c)) exit
                ws = median_ws()
                lim = (ws > 0) ? sprintf("%15.0f", n / ws) : sprintf("%15s", "-")
                dr = (ws > 0) ? sprintf("%14.2fx", median("pgrpl") / ws) : sprintf("%15s", "-")
                rc = ("ceiling" in c) ? sprintf("%13.1f%%", 100 * median("ceiling") / median("pgrpl")) : sprintf("%14s", "-")
                rb = ("builtin" in c) ? sprintf("%14.1f%%", 100 * median("builtin") / median("pgrpl")) : sprintf("%15s", "-")
                while ((getline line < memf) > 0) {
                    split(line, f, " ")
                    if (f[1] == w) { if (f[4] > anon) anon = f[4]; if (f[5] > hwm) hwm = f[5] }
                }
                # ratio of rates = inverse ratio of times
                printf "%-40s %s %s %s %s %16.1f %16.1f\n", title, rc, rb, lim, dr, hwm / 1024, anon / 1024
            }' "$RESULTS"
    done; done
}

# Disk use per change (pgrpl) and per row (built-in replica), median of
# the drains.
print_storage() {
    [[ -s $SIZES ]] || return 0
    local w
    printf '%-40s %14s %12s %13s %13s %14s\n' workload "log B/change" "(changes)" "replica B/row" "(rows)" "log/replica"
    for w in $WORKLOADS; do for t in $TRANSPORTS; do
        awk -v w="${w}_$t" -v title="${W_TITLE[$w]}, $t" "$AWK_MEDIAN"'
            function median(k,   i, m, a) {
                m = c[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
                return med(a, m)
            }
            $1 == w && $5 > 0 { c[$2]++; v[$2, c[$2]] = $4 / $5; n[$2] = $5 }
            END {
                if (!("pgrpl" in c) && !("builtin" in c)) exit
                lp = ("pgrpl" in c) ? sprintf("%14.0f %12d", median("pgrpl"), n["pgrpl"]) : sprintf("%14s %12s", "-", "-")
                lb = ("builtin" in c) ? sprintf("%13.0f %13d", median("builtin"), n["builtin"]) : sprintf("%13s %13s", "-", "-")
                lr = (("pgrpl" in c) && ("builtin" in c)) ? sprintf("%13.2fx", median("pgrpl") / median("builtin")) : sprintf("%14s", "-")
                printf "%-40s %s %s %s\n", title, lp, lb, lr
            }' "$SIZES"
    done; done
    [[ -s $WALS ]] || return 0
    echo
    echo "WAL the subscriber wrote during each drain (its insert position before and after; the drain's own"
    echo "writes, with full-page images after the checkpoint that precedes every drain), per change, median:"
    echo
    printf '%-40s %14s %14s %10s\n' workload "pgrpl B/chg" "built-in B/chg" "pgrpl/bi"
    for w in $WORKLOADS; do for t in $TRANSPORTS; do
        awk -v w="${w}_$t" -v title="${W_TITLE[$w]}, $t" -v n="${W_CHANGES[$w]}" "$AWK_MEDIAN"'
            function median(k,   i, m, a) {
                m = c[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
                return med(a, m)
            }
            $1 == w { c[$2]++; v[$2, c[$2]] = $4 / n }
            END {
                if (!("pgrpl" in c) && !("builtin" in c)) exit
                lp = ("pgrpl" in c) ? sprintf("%14.0f", median("pgrpl")) : sprintf("%14s", "-")
                lb = ("builtin" in c) ? sprintf("%14.0f", median("builtin")) : sprintf("%14s", "-")
                lr = (("pgrpl" in c) && ("builtin" in c)) ? sprintf("%9.2fx", median("pgrpl") / median("builtin")) : sprintf("%10s", "-")
                printf "%-40s %s %s %s\n", title, lp, lb, lr
            }' "$WALS"
    done; done
}

# The TCP segments the walsender sent per drain (median) and the bytes per
# segment, pgrpl and built-in.
print_segments() {
    [[ -s $SEGS ]] || return 0
    echo
    echo "TCP segments the walsender sent during each drain (data segments of its connection, from"
    echo "ss -ti), median, and bytes per segment.  It sends every message with its own send(); they"
    echo "leave together only when they cannot leave at once (a consumer that lags):"
    echo
    printf '%-40s %12s %8s %12s %8s\n' workload "pgrpl segs" "B/seg" "built-in" "B/seg"
    for w in $WORKLOADS; do
        awk -v w="${w}_tcp" -v title="${W_TITLE[$w]}, tcp" "$AWK_MEDIAN"'
            function median(k, f,   i, m, a) {
                m = c[k]; for (i = 1; i <= m; i++) a[i] = v[k, i, f]
                return med(a, m)
            }
            $1 == w { c[$2]++; v[$2, c[$2], 1] = $4; v[$2, c[$2], 2] = ($4 > 0 ? $5 / $4 : 0) }
            END {
                if (!("pgrpl" in c) && !("builtin" in c)) exit
                lp = ("pgrpl" in c) ? sprintf("%12.0f %8.0f", median("pgrpl", 1), median("pgrpl", 2)) : sprintf("%12s %8s", "-", "-")
                lb = ("builtin" in c) ? sprintf("%12.0f %8.0f", median("builtin", 1), median("builtin", 2)) : sprintf("%12s %8s", "-", "-")
                printf "%-40s %s %s\n", title, lp, lb
            }' "$SEGS"
    done
}

# ----------------------------------------------------------------- main --

pgrpl_require_root
trap cleanup EXIT
trap 'exit 143' INT TERM HUP

pgrpl_banner "dependencies"
pgrpl_install_deps

BENCH=$(pgrpl_make_workdir bench)
cd "$BENCH" # commands run as postgres inherit it; the checkout may be root-only
PRIMARY=$BENCH/primary SUBSCRIBER=$BENCH/subscriber
RESULTS=$BENCH/results MEM=$BENCH/mem SIZES=$BENCH/sizes WALS=$BENCH/wal SEGS=$BENCH/segs
mkfifo "$BENCH/nap.fifo"
exec {NAP_FD}<>"$BENCH/nap.fifo"
: >"$RESULTS"
: >"$MEM"
: >"$SIZES"
: >"$WALS"
: >"$SEGS"

pgrpl_banner "build + install pgrpl"
# What is measured: the work tree as copied now (tracked + untracked files).
SOURCE=$(git -c safe.directory='*' -C "$REPO_ROOT" describe --always --dirty --exclude='*' 2>/dev/null ||
    echo "not a git checkout")
echo "pgrpl source: $SOURCE"
if ! pgrpl_build_and_install "$REPO_ROOT" "$BENCH/build" >"$BENCH/build.log" 2>&1; then
    tail -n 40 "$BENCH/build.log"
    exit 1
fi
echo "installed into $("$PGRPL_PG_CONFIG" --pkglibdir)"
# psql runs as postgres: it reads the benchmark's SQL from the copy just built
# (the same snapshot as what is measured), not from the checkout.
BENCH_SQL=$BENCH/build/scripts/bench

pgrpl_banner "start primary and subscriber"
PPORT=$(pgrpl_free_port 54501)
SPORT=$(pgrpl_free_port $((PPORT + 1)))
# autovacuum off: on two cores a worker vacuuming what one drain wrote (the
# replica table, the log's TOAST, the primary's backlog) took CPU from
# whichever consumer drained next (seen: 6 s of VACUUM across two drains).
# The parts that query run VACUUM ANALYZE themselves.
COMMON_CONF=("shared_buffers = 256MB" "max_wal_size = 32GB" "min_wal_size = 1GB"
    "checkpoint_timeout = 1h" "max_replication_slots = 32" "max_wal_senders = 32"
    "autovacuum = off")
pgrpl_start_cluster "$PRIMARY" "$PPORT" "$BENCH" "wal_level = logical" "${COMMON_CONF[@]}"
# wal_retrieve_retry_interval: the built-in launcher starts at most one apply
# worker per interval (default 5 s), which would add up to 5 s to a drain.
# pgrpl.partition_size scales with the rest, so that a --quick log has as
# many partitions as a full one.
SUB_CONF=("shared_preload_libraries = 'pgrpl'" "wal_retrieve_retry_interval = 100ms"
    "pgrpl.partition_size = $PARTITION_SIZE")
pgrpl_start_cluster "$SUBSCRIBER" "$SPORT" "$BENCH" "${SUB_CONF[@]}" "${COMMON_CONF[@]}"
CONNINFO="host=127.0.0.1 port=$PPORT dbname=postgres user=postgres"
psql_p -f "$BENCH_SQL/tables.sql"
psql_p -f "$BENCH_SQL/primary.sql"
psql_s -f "$BENCH_SQL/tables.sql"
psql_s -f "$BENCH_SQL/subscriber.sql"
warm_up
echo "primary 127.0.0.1:$PPORT, subscriber 127.0.0.1:$SPORT, under $BENCH"
q_p "SELECT version()"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "both: ${COMMON_CONF[*]}"
echo "primary: wal_level = logical; subscriber: ${SUB_CONF[*]}"
echo "scale $SCALE, $REPS drain(s) per consumer; parts: ${PARTS[*]}"
echo "load average before the first step: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews the figures)"

START=$(now)
if want throughput; then
    for w in $WORKLOADS; do run_workload "$w"; done
fi
if want latency; then run_latency; fi
if want queries; then run_queries; fi
if want streaming; then run_streaming; fi
if want snapshot; then run_snapshot; fi

pgrpl_banner "results"
echo "pgrpl $SOURCE; PostgreSQL $(q_p "SHOW server_version"), $(nproc) cores; scale $SCALE;" \
    "total $(elapsed "$START" "$(now)") s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
if want throughput; then
    echo
    echo "Throughput: median of $REPS drain(s) of the same backlog, timed from consumer start until the"
    echo "primary's slot confirmed the target LSN.  ceiling = pg_recvlogical -> /dev/null; built-in ="
    echo "CREATE SUBSCRIPTION with default options (synchronous_commit = off, streaming = off, binary ="
    echo "false), copy_data = false; pgrpl = default settings (its worker commits asynchronously too)."
    echo "Times include the consumer's last flush report (built-in: after up to 1 s of idle nap;"
    echo "pgrpl: it flushes its last commit itself 10 ms after the stream goes quiet)."
    echo "consumer/walsndr CPU: CPU time (user + system) the consumer process and the walsender"
    echo "serving it used during the drain; a process near 100% of the drain time is the bottleneck."
    echo "walsndr-bound/s: changes / CPU seconds of the walsender serving pgrpl (median), the most one"
    echo "subscription can get from its walsender; drain/walsndr: pgrpl's drain time / that CPU time"
    echo "(1.0x: the worker keeps up with the primary's decoding; target <= 1.2x).  tcp = 127.0.0.1,"
    echo "unix = the primary's Unix socket, for every consumer."
    echo
    print_throughput
    echo
    echo "Disk use after each drain (measured after its timing), median: pgrpl = its subscription's change and"
    echo "transaction partitions (heap, indexes, TOAST, maps) / changes captured; built-in = the replica table"
    echo "likewise / its rows.  The log keeps every change; the replica one version of each row, plus the"
    echo "dead tuples its UPDATEs and DELETEs left that vacuum has not yet reclaimed."
    echo
    print_storage
    print_segments
fi
if want latency; then
    echo
    echo "End-to-end latency, $LAT_N single-row transactions at ~$LAT_RATE/s: commit returned on the primary"
    echo "-> row visible on the subscriber (busy polling for 5 ms, then every ~1 ms)."
    echo "$LATENCY_OUT"
fi
if want streaming; then
    echo
    echo "Streaming: one transaction of $B_ROWS inserts, streamed by the walsender (logical_decoding_work_mem"
    echo "= $STREAM_LDWM), median of $REPS backlog drains; built-in WITH (streaming = on), pgrpl by default."
    echo "spill bytes: the slot's pg_stat_replication_slots.spill_bytes (0: nothing spilled to disk)."
    echo "Then live, each consumer alone: COMMIT returned on the primary -> all rows visible on the subscriber,"
    echo "and from the STREAM COMMIT's arrival (built-in: its DEBUG1 'received commit for streamed transaction'"
    echo "line, ms precision, to the last row seen; pgrpl: its own DEBUG1 measure up to its local commit)."
    echo
    print_streaming
fi
if want snapshot; then
    echo
    echo "Snapshot: a table of $S_ROWS rows ((b)'s shape, $(q_p "SELECT pg_size_pretty(pg_table_size('public.bench_snap'))")) copied from an idle primary,"
    echo "median of $S_REPS; built-in: CREATE SUBSCRIPTION (copy_data = true) until its table sync is ready;"
    echo "pgrpl: create_subscription (copy_data) until stat_snapshot says done.  Memory: the copying"
    echo "process's peak RssAnon (built-in: its table sync worker; pgrpl: its worker), and its CPU time"
    echo "during the copy (the copy is bound by the copier when that is close to the time taken)."
    echo
    print_snapshot
fi
if want queries; then
    echo
    echo "Queries on a $((Q_ROWS + Q_SMALL_CHANGES))-change log (qbench: public.t $Q_KEYS keys x 10 changes, 4 a"
    echo "transaction; public.small 100 rows x 3 changes spread over it), partitions of $PARTITION_SIZE changes:"
    echo "warm-up + $QUERY_RUNS runs each in one session, ms; steady = median of the runs from the session's"
    echo "6th call on (plpgsql plans for the arguments' values 5 times, then may keep a generic plan)."
    echo "$QUERIES_OUT"
    echo
    echo "Per-relation cost: public.small's 100 rows / 300 changes in a $Q_SMALL_LOG-change log (qsmall)"
    echo "and in the $((Q_ROWS + Q_SMALL_CHANGES))-change one (qbench), each log in a session of its own; avg and steady"
    echo "(as above) of $QUERY_RUNS warm runs, ms (target: big/small <= 2)."
    echo "$RELQ_OUT"
    echo
    echo "Rows the statements inside each function read from the log's partitions (one call, qbench):"
    printf '%-52s %10s %10s\n' query change transaction
    cat "$PLAN_READS"
    echo
    echo "$PURGE_OUT"
fi
