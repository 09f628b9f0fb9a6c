#!/usr/bin/env bash
# The official socket.io JavaScript client the tests run under node (tests/js).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v node >/dev/null 2>&1; then
  echo "node is required (the official socket.io client runs under it)" >&2
  exit 1
fi
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
