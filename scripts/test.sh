#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests drive (node packages), builds,
# runs every test, and prints a summary. PostgreSQL variants run when RELAIS_TEST_POSTGRES_URL is
# set (.ci/run sets it); otherwise they say they were skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp -t relais-test.XXXXXX)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
step() { printf '\n==> %s\n' "$*"; }

# Everything the tests drive besides Rust (node packages, the browser client, chromium, a
# Python venv for aiortc...): one script each in scripts/prepare/, run in order.
for prep in scripts/prepare/*.sh; do
  step "prepare: $(basename "$prep")"
  "$prep" || { echo "preparation failed: $prep" >&2; exit 1; }
done

step "cargo test (the workspace: server and relais-load, all targets; every test binary runs even when one fails)"
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo 'test result: .* [0-9]+ failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
elapsed=$(( $(date +%s) - started ))

printf '\n==================== relais test summary ====================\n'
printf 'passed: %s   failed: %s   time: %ss\n' "$passed" "$failed" "$elapsed"
if [ -z "${RELAIS_TEST_POSTGRES_URL:-}" ]; then
  echo "skipped: PostgreSQL variants (RELAIS_TEST_POSTGRES_URL is not set; they passed as no-ops)"
else
  echo "PostgreSQL variants ran against ${RELAIS_TEST_POSTGRES_URL%%@*}@…"
fi
if [ "$status" -ne 0 ]; then
  echo "RESULT: FAILED (cargo test exited $status)"
  grep -E '^(test .* FAILED|---- .* stdout ----)' "$log" | head -40
  exit "$status"
fi
echo "RESULT: OK"
