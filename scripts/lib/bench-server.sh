# Sourced by bench-media.sh and callgrind-media.sh (from the repository root): one release
# relais in a temporary directory, loopback only, HTTPS off, on the benchmark ports (HTTP
# $BENCH_HTTP_PORT or 3900, media 3979, TURN 3978), stopped and removed when the script exits.
#
#   start_bench_server [wrapper command …]   # e.g. valgrind …; sets server_pid
#
# BENCH_RELAIS=path runs another build; BENCH_SERVER_LOG=file keeps the server's log;
# BENCH_SHARED_PORT=1 turns HTTPS on at 127.0.0.1:3943, shared with TURN and ICE-TCP
# (`https.multiplex`): `--tcp-port 3943` / `--transport turn-tls --turn-port 3943` use it.

bench_url="http://127.0.0.1:${BENCH_HTTP_PORT:-3900}"
bench_dir=$(mktemp -d -t relais-bench.XXXXXX)
bench_secret=$(head -c 33 /dev/urandom | base64)
relais_bin=$(realpath "${BENCH_RELAIS:-target/release/relais}")
server_pid=

[ -x "$relais_bin" ] || { echo "$relais_bin is missing: run cargo build --release" >&2; exit 1; }

stop_bench_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "${BENCH_SERVER_LOG:-}" ]; then cp "$bench_dir/server.log" "$BENCH_SERVER_LOG" || true; fi
  rm -rf "$bench_dir"
}
trap stop_bench_server EXIT

start_bench_server() {
  local https=(--set https.enabled=false)
  if [ -n "${BENCH_SHARED_PORT:-}" ]; then
    https=(--set https.enabled=true --set https.addr=127.0.0.1:3943 --set https.multiplex=true)
  fi
  (cd "$bench_dir" && RELAIS_JWT_SECRET="$bench_secret" RELAIS_LOG="${RELAIS_LOG:-warn}" \
    exec "$@" "$relais_bin" "${https[@]}" \
    --set http.addr="${bench_url#http://}" --set media.public_ips=127.0.0.1 \
    --set media.udp_addr=127.0.0.1:3979 --set media.tcp_addr=127.0.0.1:3979 \
    --set turn.udp_addr=127.0.0.1:3978 --set turn.tcp_addr=127.0.0.1:3978 \
    --set turn.tls_addr=127.0.0.1:5949 >"$bench_dir/server.log" 2>&1) &
  server_pid=$!
  # Up to a minute: under valgrind the server starts ~50 times slower.
  for _ in $(seq 1 600); do
    curl -sf "$bench_url/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$bench_dir/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "relais did not answer on $bench_url within a minute" >&2
  exit 1
}
