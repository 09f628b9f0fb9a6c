#!/usr/bin/env bash
# The browser client (web/): install from the lockfile, type-check and build into web/dist (the
# server serves it), run its unit tests (Vitest); the end-to-end test's own packages
# (tests/e2e: playwright-core, no browser download); and Debian's chromium, which that test
# drives, with certutil (libnss3-tools: the port-443 browser tests make chromium trust a test CA)
# (installed when running as root and missing: this is how CI gets them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CI=${CI:-true}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are required to build the browser client (web/)" >&2
  exit 1
fi
npm_ci() { npm ci --no-audit --no-fund --loglevel=error; }

(cd web && npm_ci && npm run build && npx --no-install vitest run --reporter=dot)
(cd tests/e2e && npm_ci)

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing ${missing[*]} for the browser end-to-end tests"
    apt-get update -q </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" </dev/null
  else
    echo "note: ${missing[*]} missing and this is not root; the browser end-to-end tests will skip" >&2
  fi
fi
