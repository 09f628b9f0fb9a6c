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
#
# callgrind runs the server ~50 times slower: keep SESSIONS at 1 or 2. The profile stays in
# $OUT (callgrind_annotate --inclusive=yes "$OUT" shows where the instructions go). User space
# only: system calls count as one instruction each.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
relais_bin=$(realpath "${BENCH_RELAIS:-target/release/relais}")
load_bin=target/release/relais-load
for b in "$relais_bin" "$load_bin"; do
  [ -x "$b" ] || { echo "$b is missing: run cargo build --release" >&2; exit 1; }
done
sessions=${SESSIONS:-1}
out=${OUT:-/tmp/relais-callgrind.$$}
port=${BENCH_HTTP_PORT:-3900}
base="http://127.0.0.1:$port"

dir=$(mktemp -d -t relais-callgrind.XXXXXX)
secret=$(head -c 33 /dev/urandom | base64)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# MIMALLOC_ARENA_EAGER_COMMIT set: relais does not re-execute itself (valgrind would lose it).
(cd "$dir" && RELAIS_JWT_SECRET="$secret" RELAIS_LOG=warn MIMALLOC_ARENA_EAGER_COMMIT=0 \
  exec valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
  "$relais_bin" --set https.enabled=false --set http.addr="127.0.0.1:$port" \
  --set media.public_ips=127.0.0.1 --set media.udp_addr=127.0.0.1:3979 \
  --set media.tcp_addr=127.0.0.1:3979 --set turn.udp_addr=127.0.0.1:3978 \
  --set turn.tcp_addr=127.0.0.1:3978 --set turn.tls_addr=127.0.0.1:5949 >"$dir/server.log" 2>&1) &
server_pid=$!
for _ in $(seq 1 300); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.2
done

forwarded() { curl -sf "$base/metrics" | awk '/^relais_rtp_packets_forwarded_total/ {print $2}'; }

"$load_bin" --url "$base" --jwt-secret "$secret" media --sessions "$sessions" \
  --warmup 20s --duration 30s --quiet >"$dir/load.txt" 2>&1 &
load_pid=$!
sleep 25
callgrind_control -z "$server_pid" >/dev/null 2>&1
f1=$(forwarded)
sleep 20
f2=$(forwarded)
callgrind_control -d "$server_pid" >/dev/null 2>&1
wait "$load_pid" || { cat "$dir/load.txt" >&2; exit 1; }
sleep 1
dump=$(ls -t "$out.$server_pid".* 2>/dev/null | head -1)
[ -n "$dump" ] || { echo "callgrind wrote no dump" >&2; exit 1; }
total=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null |
  awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
packets=$(awk -v a="$f1" -v b="$f2" 'BEGIN {print b - a}')
awk -v t="$total" -v p="$packets" -v d="$dump" 'BEGIN {
  printf "forwarded %d packets; %.0f instructions per forwarded packet (profile: %s)\n", p, t / p, d }'
