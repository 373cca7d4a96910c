#!/usr/bin/env bash
# test/fuzz/run.sh — build test/fuzz/fuzz.c and fuzz pgrpl.decode() on a
# running server where pgrpl is installed (CREATE EXTENSION pgrpl done in
# the target database).  Not part of CI; sql/fuzz.sql is the bounded CI run.
#
# Usage: bash test/fuzz/run.sh 'host=/tmp port=5432 dbname=postgres' \
#            [cases=100000] [seed=1] [postmaster-log]
# PG_CONFIG chooses the installation whose libpq is used (default: pg_config).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
CONNINFO=${1:?conninfo}
CASES=${2:-100000}
SEED=${3:-1}
LOG=${4:-}
OUT=$(mktemp -d /tmp/pgrpl-fuzz.XXXXXX)
cc -O2 -Wall -o "$OUT/fuzz" "$HERE/fuzz.c" -I"$("$PG_CONFIG" --includedir)" \
    -L"$("$PG_CONFIG" --libdir)" -lpq
LD_LIBRARY_PATH="$("$PG_CONFIG" --libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$OUT/fuzz" -d "$CONNINFO" -c "$HERE/corpus.hex" -n "$CASES" -s "$SEED" \
    -o "$OUT" ${LOG:+-l "$LOG"}
rc=$?
echo "crash files (if any) in $OUT"
exit $rc
