#!/usr/bin/env bash
# `relais-load media --janus` (and `--target janus`) compares relais with Janus's VideoRoom,
# started by the tool in a network namespace. As root, install Debian's `janus` if missing.
set -euo pipefail
if command -v janus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "installing janus for the load tool's comparison target"
  apt-get update -q </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends janus </dev/null
else
  echo "note: janus missing and this is not root; relais-load's janus target will not run" >&2
fi
