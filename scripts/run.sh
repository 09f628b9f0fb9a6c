#!/usr/bin/env bash
# Runs the server from a fresh clone: builds the browser client (web/, when node is present),
# then the server in release mode. Extra arguments go to `relais` (e.g. `--set http.addr=…`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f web/package.json ]; then
  if command -v npm >/dev/null 2>&1; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build)
  else
    echo "npm not found: serving without the browser client (REST and Socket.IO still work)" >&2
  fi
fi
exec cargo run --release --bin relais -- "$@"
