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
bin=target/release
for b in relais relais-load; do
  [ -x "$bin/$b" ] || { echo "$bin/$b is missing: run cargo build --release" >&2; exit 1; }
done

dir=$(mktemp -d -t relais-bench.XXXXXX)
secret=$(head -c 33 /dev/urandom | base64)
export RELAIS_JWT_SECRET="$secret"
export RELAIS_LOG=${RELAIS_LOG:-warn}
port=${BENCH_HTTP_PORT:-3900}

server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "${BENCH_SERVER_LOG:-}" ]; then cp "$dir/server.log" "$BENCH_SERVER_LOG" || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

relais_bin=$(realpath "${BENCH_RELAIS:-$bin/relais}")
(cd "$dir" && exec "$relais_bin" --set https.enabled=false \
  --set http.addr="127.0.0.1:$port" --set media.public_ips=127.0.0.1 \
  --set media.udp_addr=127.0.0.1:3979 --set media.tcp_addr=127.0.0.1:3979 \
  --set turn.udp_addr=127.0.0.1:3978 --set turn.tcp_addr=127.0.0.1:3978 \
  --set turn.tls_addr=127.0.0.1:5949 >"$dir/server.log" 2>&1) &
server_pid=$!

for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.1
done

"$bin/relais-load" --url "http://127.0.0.1:$port" --jwt-secret "$secret" \
  media --server-pid "$server_pid" "$@"
