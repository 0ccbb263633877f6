#!/usr/bin/env bash
# Runs the kill -9 durability test for many rounds (CI runs 20).
# Usage: scripts/crash.sh [ROUNDS]   (default 200)
# Each round starts signpost on the same data directory, lets four clients
# register concurrently, kills the server with SIGKILL at a random moment,
# and checks on the next start that every acknowledged write is there, over
# the API and over DNS.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-200}"
CRASH_ROUNDS="$rounds" exec cargo test --release --locked --test store kill_9_loses_no_acknowledged_write -- --nocapture
