#!/usr/bin/env bash
# test/fuzz/capture.sh — (re)build the fuzz corpus test/fuzz/corpus.hex.
#
# Runs test/fuzz/workload.sql in a fresh scratch database of a running
# server that has wal_level = logical (connection from the usual PG*
# environment variables / psql defaults), peeks every pgoutput message of
# the workload (proto_version 1, messages on) and writes them one per line,
# hex, to the corpus.  The scratch database, slot and origin are dropped.
#
# Usage: PGHOST=... PGPORT=... bash test/fuzz/capture.sh [psql-bin-dir]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PSQL=${1:+$1/}psql
DB=pgrpl_fuzz_capture

"$PSQL" -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
trap '"$PSQL" -X -q -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"'fuzz_slot'"'" -c "DROP DATABASE IF EXISTS '"$DB"'" >/dev/null' EXIT
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/workload.sql" >/dev/null
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DB" -At -c "
    SELECT encode(data, 'hex')
      FROM pg_logical_slot_peek_binary_changes('fuzz_slot', NULL, NULL,
           'proto_version', '1', 'publication_names', 'fuzz_pub', 'messages', 'true')" \
    >"$HERE/corpus.hex.tmp"
"$PSQL" -X -q -d "$DB" -c "SELECT pg_replication_origin_drop('fz_origin')" >/dev/null
mv "$HERE/corpus.hex.tmp" "$HERE/corpus.hex"
echo "$(wc -l <"$HERE/corpus.hex") messages written to $HERE/corpus.hex"
