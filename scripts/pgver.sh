#!/usr/bin/env bash
# scripts/pgver.sh — build pgrpl against another PostgreSQL major and run
# its test suite there, in a Debian chroot that packages that major.
#
# Usage (as root on a Debian machine, e.g. a fresh bookworm one):
#   bash scripts/pgver.sh MAJOR
#   PGRPL_TESTS_ONLY=regress,tap PROVE_TESTS="t/001_basic.pl" bash scripts/pgver.sh 18
#
# MAJOR and the Debian release whose packages provide it:
#   15  bookworm     17  trixie     18  sid
# (16 is in no Debian release reachable from a Debian mirror: not supported
# here.  PGRPL_CHROOT_SUITE=... picks another release for any major.)
#
# Steps: install mmdebstrap on the host if missing; build the chroot
# (Debian RELEASE with postgresql-MAJOR, its server headers, perl's
# IPC::Run, make, gcc) under the cache dir, or reuse it, installing only
# packages it lacks; copy this checkout (tracked + untracked-not-ignored
# files, as scripts/test.sh does) into the chroot's /tmp; then, in a private
# mount and PID namespace (/proc, /dev and a fresh /dev/shm mounted into the
# chroot, everything left running is killed when the run ends), run
# scripts/test.sh there as root with PGRPL_PG_MAJOR=MAJOR.  test.sh builds
# pgrpl with that major's PGXS, installs it and runs the tests as postgres.
# The last line of output is test.sh's `N passed, N failed`; the exit status
# is test.sh's (a failure before it ran prints `0 passed, 1 failed`).
#
# The Debian mirror is the one the host's apt sources already name.
#
# Environment:
#   PGRPL_CHROOT_CACHE   dir holding the chroots (default /var/cache; the
#                        chroot is $PGRPL_CHROOT_CACHE/pgrpl-chroot-MAJOR)
#   PGRPL_CHROOT_SUITE   Debian release for the chroot (see the table above)
#   PGRPL_CHROOT_MIRROR  Debian mirror URI (default: from /etc/apt/sources*)
#   PGRPL_CHROOT_REBUILD=1  build the chroot afresh even if one is cached
# and everything scripts/test.sh reads (PGRPL_TESTS_ONLY, PROVE_TESTS,
# PROVE_FLAGS, PGRPL_*_TIMEOUT, ...): PGRPL_* and PROVE_* variables and CI
# are passed into the chroot, except PGRPL_PG_BIN/PGRPL_PG_CONFIG (host
# paths) and PGRPL_CHROOT_*.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

MAJOR=${1:-}
[[ $MAJOR =~ ^[0-9]+$ ]] || { echo "usage: $0 MAJOR   (e.g. 17)" >&2; echo "0 passed, 1 failed"; exit 2; }
# lib.sh derives its package list and paths from PGRPL_PG_MAJOR
PGRPL_PG_MAJOR=$MAJOR
unset PGRPL_PG_BIN PGRPL_PG_CONFIG
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

ROOT=${PGRPL_CHROOT_CACHE:-/var/cache}/pgrpl-chroot-$MAJOR
SRC='' DONE=''

# Until test.sh runs, any exit is a failure that still ends with the count.
on_exit() {
    local rc=$?
    [[ -n $DONE ]] && return
    trap - EXIT
    [[ -z $SRC ]] || rm -rf "$SRC"
    echo "pgver.sh $MAJOR: failed before the tests ran (status $rc)"
    echo "0 passed, 1 failed"
    exit 1
}
trap on_exit EXIT

suite_of() {
    [[ -z ${PGRPL_CHROOT_SUITE:-} ]] || { echo "$PGRPL_CHROOT_SUITE"; return; }
    case $1 in
        15) echo bookworm ;;
        17) echo trixie ;;
        18) echo sid ;;
        *) pgrpl_die "no Debian release known to package PostgreSQL $1 (set PGRPL_CHROOT_SUITE)" ;;
    esac
}

# The first Debian archive URI (not the security one) in the host's apt
# sources, one-line (*.list) or deb822 (*.sources) format.
host_mirror() {
    local f uri
    [[ -z ${PGRPL_CHROOT_MIRROR:-} ]] || { echo "$PGRPL_CHROOT_MIRROR"; return; }
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        while read -r uri; do
            [[ $uri == *security* ]] && continue
            [[ ${uri%/} == */debian ]] || continue
            echo "${uri%/}"
            return
        done < <(awk '
            /^[ \t]*deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; break } }
            /^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f")
    done
    pgrpl_die "no Debian mirror found in /etc/apt/sources*; set PGRPL_CHROOT_MIRROR"
}

# Run a command in the chroot (no namespaces: for apt and dpkg only).
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" </dev/null; }

# Build the chroot, or complete a cached one with whatever package it lacks.
ensure_chroot() {
    local suite mirror pkg missing=()
    suite=$(suite_of "$MAJOR")
    if [[ ${PGRPL_CHROOT_REBUILD:-} == 1 || ! -f $ROOT/.pgrpl-chroot ]]; then
        mirror=$(host_mirror)
        command -v mmdebstrap >/dev/null || {
            pgrpl_banner "installing mmdebstrap on the host"
            DEBIAN_FRONTEND=noninteractive apt-get update -q &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap </dev/null
        }
        pgrpl_banner "building the $suite chroot for PostgreSQL $MAJOR in $ROOT"
        rm -rf "$ROOT.new" "$ROOT"
        mkdir -p "$(dirname "$ROOT")"
        # Check-Valid-Until off: a mirror that is a frozen copy serves sid's
        # Release file past its Valid-Until date (signatures are checked)
        mmdebstrap --variant=apt --components=main \
            --aptopt='Acquire::Check-Valid-Until "false"' \
            --include="$(IFS=,; echo "${PGRPL_PACKAGES[*]}")" \
            "$suite" "$ROOT.new" "deb $mirror $suite main" </dev/null
        echo "$suite $mirror" >"$ROOT.new/.pgrpl-chroot"
        mv "$ROOT.new" "$ROOT"
    else
        pgrpl_banner "reusing the chroot $ROOT ($(cat "$ROOT/.pgrpl-chroot"))"
        for pkg in "${PGRPL_PACKAGES[@]}"; do
            in_root dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
                missing+=("$pkg")
        done
        if ((${#missing[@]})); then
            echo "installing into the chroot: ${missing[*]}"
            cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
            in_root apt-get update -q && in_root apt-get install -y -q --no-install-recommends "${missing[@]}"
        fi
    fi
    in_root id "$PGRPL_PG_USER" >/dev/null || pgrpl_die "no user $PGRPL_PG_USER in $ROOT"
    in_root "/usr/lib/postgresql/$MAJOR/bin/pg_config" --version
}

main() {
    local var pass=()
    pgrpl_require_root
    mkdir -p "$(dirname "$ROOT")"
    exec 9>"$ROOT.lock"
    flock 9 # one run per chroot at a time
    ensure_chroot

    SRC=$(mktemp -d "$ROOT/tmp/pgrpl-src.XXXXXX")
    pgrpl_copy_source "$REPO_ROOT" "$SRC"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

    pass=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "PGRPL_PG_MAJOR=$MAJOR")
    [[ -z ${CI:-} ]] || pass+=("CI=$CI")
    while IFS= read -r var; do
        case $var in PGRPL_PG_MAJOR | PGRPL_PG_BIN | PGRPL_PG_CONFIG | PGRPL_CHROOT_*) continue ;; esac
        pass+=("$var=${!var}")
    done < <(compgen -e | grep -E '^(PGRPL_|PROVE_)' || true)

    pgrpl_banner "PostgreSQL $MAJOR: scripts/test.sh in $ROOT"
    echo "(paths below are inside the chroot: /tmp/... is $ROOT/tmp/...)"
    DONE=1
    local rc=0
    # private mounts (undone when the namespace ends) and a PID namespace
    # whose first process only waits: when it exits, every process left in
    # the chroot (e.g. a server of a killed test) is killed with it.
    # unshare ignores SIGTERM/SIGINT while it waits: a signal to this script
    # SIGKILLs it, and --kill-child then takes the whole namespace down.
    unshare --mount --propagation private --pid --fork --kill-child -- \
        /bin/bash -c '
            set -e
            r=$1; shift
            mount --rbind /dev "$r/dev"
            mount -t tmpfs -o mode=1777,size=1g shm "$r/dev/shm"
            mount -t proc proc "$r/proc"
            # the host'"'"'s primaries of other majors (t/030), if it has them
            if [ -d /var/cache/pgrpl-primaries ]; then
                mkdir -p "$r/var/cache/pgrpl-primaries"
                mount --bind /var/cache/pgrpl-primaries "$r/var/cache/pgrpl-primaries"
            fi
            chroot "$r" /usr/bin/env -i "$@" </dev/null &
            wait $!' _ "$ROOT" "${pass[@]}" bash "/tmp/${SRC##*/}/scripts/test.sh" &
    local ns=$! sig=''
    trap 'sig=1; kill -KILL $ns 2>/dev/null' TERM INT HUP
    while :; do
        rc=0
        wait "$ns" || rc=$?
        kill -0 "$ns" 2>/dev/null || break
    done
    rm -rf "$SRC"
    if [[ -n $sig ]]; then
        echo "pgver.sh $MAJOR: interrupted, tests killed"
        echo "0 passed, 1 failed"
        exit 143
    fi
    exit "$rc"
}

main "$@"
