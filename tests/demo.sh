#!/usr/bin/env bash
# `make demo`: each agent in turn against a fresh IMDS emulator with 1000 user-assigned
# identities. REAL_LIMITS=1 uses IMDS's real 20 requests/s and 5 in flight; otherwise the
# emulator and the clients share a raised limit of 500/s and 16 in flight.
# Usage: tests/demo.sh AGENT...   (rust, c, python); exit 0 only when every report holds.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib/emulator.sh
trap emulator_stop_all EXIT
IDENTITIES=${IDENTITIES:-1000}
if [ "${REAL_LIMITS:-0}" = 1 ]; then
  emulator_limits=(--rate 20 --concurrency 5)
  client_limits=(--rate 20 --window 1000 --in-flight 5)
  echo "limits: IMDS's real 20 requests/s and 5 in flight (the cold start takes ~$((IDENTITIES * 3 / 19)) s)"
else
  emulator_limits=(--rate 500 --concurrency 16)
  # The core counts at most 128 starts per window: 125 per 250 ms never exceeds 500 in any second.
  client_limits=(--rate 125 --window 250 --in-flight 16)
  echo "limits: 500 requests/s and 16 in flight on both sides (REAL_LIMITS=1 for IMDS's own)"
fi

# run_agent NAME CMD…: a fresh emulator for one agent, stopped when the agent is done.
run_agent() {
  local name=$1 url; shift
  # `|| status=1` below turns off set -e in here: without an emulator, stop (an agent with no
  # emulator URL would ask the real IMDS address).
  emulator_start url --identities "$IDENTITIES" "${emulator_limits[@]}" || return 1
  echo
  echo "== $name agent (emulator at $url) =="
  local agent=0
  AZURE_POD_IDENTITY_AUTHORITY_HOST="$url" "$@" "${client_limits[@]}" || agent=$?
  emulator_stop url
  return "$agent"
}

status=0
for agent in "${@:-rust}"; do
  case "$agent" in
    rust) run_agent Rust ./target/release/examples/rust_agent || status=1 ;;
    c) run_agent C ./target/c/agent || status=1 ;;
    python) run_agent Python .venv/bin/python python/examples/agent.py || status=1 ;;
    *) echo "unknown agent $agent"; status=1 ;;
  esac
done
echo
if [ "$status" = 0 ]; then
  echo "make demo: all checks passed (agents: ${*:-rust})"
else
  echo "make demo: FAILED (see the [FAILED] lines above)"
fi
exit $status
