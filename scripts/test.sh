#!/usr/bin/env bash
# Runs signpost's whole test suite: installs the DNS tools the tests drive
# (dig, kdig, knotd) when they are missing, then `cargo test`.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v kdig >/dev/null 2>&1 || missing+=(knot-dnsutils)
command -v knotd >/dev/null 2>&1 || [ -x /usr/sbin/knotd ] || missing+=(knot)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "the tests need: ${missing[*]} (Debian packages); install them with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

exec cargo test --locked "$@"
