#!/usr/bin/env bash
# Instructions per forwarded packet, counted by callgrind: a figure that does not move with
# whatever else a shared machine is doing (CPU time does, by ±10 % from run to run), to compare
# two builds of the media path. Starts a release relais under `valgrind --tool=callgrind` in a
# temporary directory (loopback, the bench-media.sh ports), drives a few synthetic consultations
# with relais-load, zeroes the counters after the warm-up, counts 20 s, and prints the result.
#
#   cargo build --release
#   scripts/callgrind-media.sh                 # 1 consultation
#   SESSIONS=2 BENCH_RELAIS=/tmp/relais-old scripts/callgrind-media.sh
#   scripts/callgrind-media.sh --transport turn-tls --insecure   # more relais-load media flags
#
# callgrind runs the server ~50 times slower: keep SESSIONS at 1 or 2. The profile stays in
# $OUT (callgrind_annotate --inclusive=yes "$OUT" shows where the instructions go). User space
# only: system calls count as one instruction each.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
load_bin=target/release/relais-load
[ -x "$load_bin" ] || { echo "$load_bin is missing: run cargo build --release" >&2; exit 1; }
sessions=${SESSIONS:-1}
out=${OUT:-/tmp/relais-callgrind.$$}
. scripts/lib/bench-server.sh
# MIMALLOC_ARENA_EAGER_COMMIT set: relais does not re-execute itself (valgrind would lose it).
start_bench_server env MIMALLOC_ARENA_EAGER_COMMIT=0 \
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no

forwarded() { curl -sf "$bench_url/metrics" | awk '/^relais_rtp_packets_forwarded_total/ {print $2}'; }

"$load_bin" --url "$bench_url" --jwt-secret "$bench_secret" media --sessions "$sessions" \
  --warmup 20s --duration 30s --quiet "$@" >"$bench_dir/load.txt" 2>&1 &
load_pid=$!
sleep 25
callgrind_control -z "$server_pid" >/dev/null 2>&1
f1=$(forwarded)
sleep 20
f2=$(forwarded)
callgrind_control -d "$server_pid" >/dev/null 2>&1
wait "$load_pid" || { cat "$bench_dir/load.txt" >&2; exit 1; }
sleep 1
dump=$(ls -t "$out.$server_pid".* 2>/dev/null | head -1)
[ -n "$dump" ] || { echo "callgrind wrote no dump" >&2; exit 1; }
total=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null |
  awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
packets=$(awk -v a="$f1" -v b="$f2" 'BEGIN {print b - a}')
awk -v t="$total" -v p="$packets" -v d="$dump" 'BEGIN {
  printf "forwarded %d packets; %.0f instructions per forwarded packet (profile: %s)\n", p, t / p, d }'
