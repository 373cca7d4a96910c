#!/usr/bin/env bash
# scripts/test.sh — build pgrpl and run its whole test suite.
#
# Usage (as root, e.g. on a fresh Debian machine, which has no sudo):
#   bash scripts/test.sh
# (a user with sudo rights: sudo bash scripts/test.sh)
#
# Steps: install missing Debian packages, copy the source tree into a fresh
# temp dir owned by `postgres`, build it as postgres, `make install` it as
# root, then run as postgres (each part always runs, even if the other fails):
#   regress part:  make installcheck TAP_TESTS=   (pg_regress only)
#   TAP part:      make installcheck REGRESS=     (prove only)
#   bench part:    scripts/bench.sh --quick       (scaled-down benchmark)
# Each pg_regress test and each TAP file counts as one test; the quick
# benchmark counts as one (it passes when it completes and prints its
# tables: figures are not judged in a test).  The last line
# of output is always `N passed, N failed`; exit 0 iff failed==0 and passed>0.
#
# Optional environment:
#   PGRPL_TESTS_ONLY=regress|tap|bench   run only these parts (a comma list
#                                  of them, e.g. regress,tap)
#   PGRPL_PG_MAJOR=17              test against /usr/lib/postgresql/17 (lib.sh;
#                                  scripts/pgver.sh runs this in a chroot)
#   PROVE_TESTS="t/001_x.pl ..."   choose TAP files (passed through to make)
#   PROVE_FLAGS=...                extra prove flags (passed through to make)
#   PGRPL_REGRESS_TIMEOUT / PGRPL_TAP_TIMEOUT   per-part limits in seconds
#   PGRPL_PRIMARY_VERSIONS="10 14 18"|all|none   primaries of other majors
#                                  for t/030_primary_versions.pl (default all)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

PASSED=0 FAILED=0 DONE=''
WORK='' TREE=''
SUMMARY=()

# ---------------------------------------------------------------- parsing --

# count_regress LOG: print "PASSED FAILED" for one pg_regress run.
# PG15:  "test setup                 ... ok   12 ms", parallel members
#        "     setup                 ... FAILED", "... failed (ignored)".
# PG16+: "ok 1         - setup   12 ms" / "not ok 2     + name".
count_regress() {
    awk '
        /^(test +| +)[^ ]+ +\.\.\. +(ok|FAILED|failed \(ignored\))/ {
            if ($0 ~ /\.\.\. +FAILED/) f++; else p++; next }
        /^not ok [0-9]+ +[-+] / { f++; next }
        /^ok [0-9]+ +[-+] /     { p++; next }
        END { print p + 0, f + 0 }' "$1"
}

# count_tap LOG: first line "PASSED FAILED" (one per TAP file), then the
# names of failing files, one a line.  Uses prove's summary ("Files=N" and
# the "Test Summary Report" blocks); if prove never got that far (killed),
# falls back to the per-file "t/x.pl .. ok" lines.
count_tap() {
    awk '
        /^Test Summary Report/ { insum = 1; next }
        /^Files=[0-9]+,/ { split($0, a, /[=,]/); total = a[2]; have = 1; insum = 0; next }
        insum && /^[^ ]+ +\(Wstat: / {
            cur = $1
            if ($0 !~ /Wstat: 0 / || $0 ~ /Failed: [1-9]/) bad[cur] = 1
            next }
        insum && /^ +(Failed tests?|Non-zero|Parse errors|No subtests)/ { if (cur != "") bad[cur] = 1; next }
        match($0, /^(\[[0-9:]+\] )?[^ ]+\.(pl|t) \.+( |$)/) {
            line = $0; sub(/^\[[0-9:]+\] /, "", line)
            name = line; sub(/ .*/, "", name)
            rest = line; sub(/^[^ ]+ \.+ */, "", rest)
            seen[name] = 1
            if (rest ~ /^(ok|skipped)/) okf[name] = 1
            next }
        END {
            if (have) {
                for (n in bad) nbad++
                print total - nbad, nbad + 0
                for (n in bad) print n
            } else {
                for (n in seen) { if (n in okf) p++; else { f++; fails = fails n "\n" } }
                printf "%d %d\n%s", p, f, fails
            }
        }' "$1"
}

# ---------------------------------------------------------------- running --

# run_part NAME TIMEOUT MAKE-ARGS...: `make installcheck ARGS` as postgres in
# the build tree, output teed to $WORK/NAME.log.  Sets PART_RC.  TMPDIR
# points into $WORK so the tests' socket dirs go away with it.
run_part() {
    local name=$1 limit=$2
    shift 2
    pgrpl_banner "$name: make installcheck $*"
    PART_RC=0
    (cd "$TREE" && timeout -k 60 "$limit" runuser -u "$PGRPL_PG_USER" -- \
        env TMPDIR="$WORK/tmp" \
        make PG_CONFIG="$PGRPL_PG_CONFIG" installcheck "$@" </dev/null) 2>&1 |
        tee "$WORK/$name.log" || PART_RC=$?
    ((PART_RC != 124)) || echo "$name: TIMED OUT after ${limit}s"
    pgrpl_stop_servers_under "$TREE" # only does something after a crash/timeout
}

# record NAME PASSED FAILED: add to the totals and the summary table.
record() {
    PASSED=$((PASSED + $2)) FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '%-8s %d passed, %d failed' "$1" "$2" "$3")")
}

run_regress() {
    local p f ran
    run_part regress "${PGRPL_REGRESS_TIMEOUT:-1200}" TAP_TESTS=
    read -r p f < <(count_regress "$WORK/regress.log")
    p=${p:-0} f=${f:-0}
    ran=$((p + f))
    # non-zero exit without a failing test (crash, initdb failure, ...): 1 failure
    if ((PART_RC == 124 || (PART_RC != 0 && f == 0))); then
        echo "regress: make exited with status $PART_RC"
        f=$((f + 1))
    fi
    record regress "$p" "$f"
    ((f == 0)) && return 0
    if [[ -f $TREE/regression.diffs ]]; then
        pgrpl_banner "regression.diffs (first 300 lines)"
        head -n 300 "$TREE/regression.diffs"
    fi
    # server log (crashes show up there); initdb's only if no test ran at all
    local log logs=("$TREE/log/postmaster.log")
    ((ran > 0)) || logs+=("$TREE/log/initdb.log")
    for log in "${logs[@]}"; do
        [[ -f $log ]] || continue
        pgrpl_banner "tail of ${log#"$TREE"/}"
        case $log in */initdb.log) tail -n 20 "$log" ;; *) tail -n 60 "$log" ;; esac
    done
}

run_tap() {
    local p f args=(REGRESS=) counts failing=() name log
    [[ -z ${PROVE_TESTS:-} ]] || args+=("PROVE_TESTS=$PROVE_TESTS")
    [[ -z ${PROVE_FLAGS:-} ]] || args+=("PROVE_FLAGS=$PROVE_FLAGS")
    # other majors' servers for t/030_primary_versions.pl (see lib.sh)
    [[ ${PROVE_TESTS:-030} != *030* ]] || pgrpl_fetch_primaries "$SCRIPT_DIR"
    run_part tap "${PGRPL_TAP_TIMEOUT:-3000}" "${args[@]}"
    mapfile -t counts < <(count_tap "$WORK/tap.log")
    read -r p f <<<"${counts[0]:-}"
    p=${p:-0} f=${f:-0}
    failing=("${counts[@]:1}")
    # a timeout always costs one failure (the hung file may not be listed);
    # any other non-zero exit without a failing file likewise
    if ((PART_RC == 124 || (PART_RC != 0 && f == 0))); then
        echo "tap: make exited with status $PART_RC"
        f=$((f + 1))
    fi
    record tap "$p" "$f"
    ((f == 0)) && return 0
    # logs of the failing files, or of every file when we cannot tell which
    local logdir=$TREE/tmp_check/log logs=()
    if ((${#failing[@]})); then
        for name in "${failing[@]}"; do
            name=$(basename "$name" .pl)
            logs+=("$logdir/regress_log_$name" "$logdir/${name}"_*.log)
        done
    else
        logs=("$logdir"/regress_log_*)
    fi
    # after a timeout, also the most recently written log (the hung file)
    # shellcheck disable=SC2012 # our own file names, no odd characters
    ((PART_RC != 124)) || logs+=("$(ls -t "$logdir"/regress_log_* 2>/dev/null | head -n 1)")
    for log in "${logs[@]}"; do
        [[ -f $log ]] || continue
        pgrpl_banner "tail of ${log#"$TREE"/}"
        case $log in */regress_log_*) tail -n 80 "$log" ;; *) tail -n 40 "$log" ;; esac
    done
}

# The scaled-down benchmark: it installs pgrpl itself and runs its own two
# clusters; it must finish and print the results table.
run_bench() {
    local rc=0
    pgrpl_banner "bench: scripts/bench.sh --quick"
    timeout -k 60 "${PGRPL_BENCH_CI_TIMEOUT:-900}" bash "$REPO_ROOT/scripts/bench.sh" --quick \
        </dev/null 2>&1 | tee "$WORK/bench.log" || rc=$?
    if ((rc == 0)) && grep -q 'pgrpl/ceiling' "$WORK/bench.log"; then
        record bench 1 0
    else
        echo "bench: exit status $rc, or no results table"
        record bench 0 1
    fi
}

# want PART: PGRPL_TESTS_ONLY is unset or names PART.
want() { [[ -z ${PGRPL_TESTS_ONLY:-} || ,$PGRPL_TESTS_ONLY, == *,"$1",* ]]; }

# ------------------------------------------------------------------ exit --

# Always end with the "N passed, N failed" line, even when something above
# aborted the script (set -e, signal): that counts as one more failure.
on_exit() {
    local rc=$?
    [[ -n $DONE ]] && return
    trap - EXIT
    [[ -n $TREE ]] && pgrpl_stop_servers_under "$TREE"
    echo "test.sh aborted (status $rc)${WORK:+; files kept in $WORK}"
    echo "$PASSED passed, $((FAILED + 1)) failed"
    exit 1
}

main() {
    local rc
    trap on_exit EXIT
    trap 'exit 143' TERM INT HUP
    local part only=${PGRPL_TESTS_ONLY:-}
    for part in ${only//,/ }; do
        case $part in
            regress | tap | bench) ;;
            *) pgrpl_die "PGRPL_TESTS_ONLY must be 'regress', 'tap', 'bench' or a comma list of them" ;;
        esac
    done
    pgrpl_require_root

    pgrpl_banner "dependencies"
    pgrpl_install_deps

    WORK=$(pgrpl_make_workdir test)
    cd "$WORK" # commands run as postgres inherit it; the checkout may be root-only
    mkdir "$WORK/tmp"
    chown "$PGRPL_PG_USER": "$WORK/tmp"
    TREE=$WORK/pgrpl
    pgrpl_banner "build + install (tree: $TREE)"
    if pgrpl_build_and_install "$REPO_ROOT" "$TREE" 2>&1 | tee "$WORK/build.log"; then
        ! want regress || run_regress
        ! want tap || run_tap
        ! want bench || [[ ! -f $REPO_ROOT/scripts/bench.sh ]] || run_bench
    else
        echo "BUILD/INSTALL FAILED (log: $WORK/build.log)"
        record build 0 1
    fi

    pgrpl_banner "summary"
    printf '%s\n' "${SUMMARY[@]}"
    if ((FAILED == 0 && PASSED > 0)); then
        cd / && rm -rf "$WORK"
        rc=0
    else
        echo "build tree and logs kept in $WORK"
        rc=1
    fi
    DONE=1
    echo "$PASSED passed, $FAILED failed"
    exit "$rc"
}

# Run only when executed, so the parsers above can be sourced for checks.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
