#!/usr/bin/env bash
# A Python virtual environment with aiortc, the independent WebRTC peer of the tests (.venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
