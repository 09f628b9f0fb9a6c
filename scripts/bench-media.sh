#!/usr/bin/env bash
# Media benchmark: starts a release relais in a temporary directory (loopback only, HTTPS off),
# runs `relais-load media` against it with the arguments given here, then stops the server.
#
#   cargo build --release
#   scripts/bench-media.sh --sessions 100 --baseline --janus --svg media.svg
#
# Extra server settings: RELAIS_* in the environment (e.g. RELAIS_LOG=warn);
# BENCH_SERVER_LOG=file keeps the server's log; BENCH_RELAIS=path runs another relais build
# (a copy of an earlier target/release/relais, to compare two builds run after run).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/relais-load ] || { echo "target/release/relais-load is missing: run cargo build --release" >&2; exit 1; }
. scripts/lib/bench-server.sh
start_bench_server

target/release/relais-load --url "$bench_url" --jwt-secret "$bench_secret" \
  media --server-pid "$server_pid" "$@"
