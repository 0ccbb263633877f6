#!/usr/bin/env bash
# bench-liveness.sh: how fast signpost's active health checks take a dead
# instance out of DNS, and what 10,000 checks cost DNS throughput. A benchmark
# for people to read; it asserts nothing about timings.
#
# Usage: scripts/bench-liveness.sh [options]
#
#   Part 1, liveness (time from SIGKILL of an instance's process to its
#   address leaving `<svc>.service.internal A`):
#   -n, --instances N     listener processes / instances per setting (LIVE_INSTANCES, 20)
#   -k, --kills N         kills per setting (KILLS, default 10)
#       --fast-interval D the second setting's check interval (FAST_INTERVAL,
#                         default 1s; '' for none). The first is the defaults
#                         (interval 10s, timeout 2s, rise 2, fall 3)
#       --poll-ms MS      DNS poll period (POLL_MS, default 10)
#   Part 2, DNS throughput with and without checks:
#   -s, --services N      services (SERVICES, default 1000)
#       --per-service N   instances per service (PER_SERVICE, default 10)
#       --check-interval D interval of the TCP checks (CHECK_INTERVAL, 1s)
#       --listeners N     listener processes the checks connect to (LISTENERS, 4)
#   -r, --rounds N        dnsperf rounds, each runs both servers (ROUNDS, 3)
#   -l, --duration S      seconds per dnsperf run (DURATION, default 10)
#   -c, --clients N       dnsperf -c (CLIENTS, default 10)
#   -T, --threads N       dnsperf -T (THREADS, default 1)
#       --idle S          seconds of idle CPU measurement per run with checks
#                         (IDLE, default 5)
#   General:
#       --parts LIST      liveness,throughput (default both)
#       --store KIND      signpost --store (default: signpost's own, embedded;
#                         each server gets a fresh --data-dir)
#   -o, --out FILE        raw results as JSON (default
#                         ./bench-results/liveness-<UTC timestamp>.json)
#       --keep-tmp        keep the temporary directory (logs, data dirs)
#   -h, --help            this text
#
# Environment: SIGNPOST_BIN (skip `cargo build --release` and use this binary),
# SIGNPOST_LOG (RUST_LOG for signpost; default info, hickory at warn), DNSPERF,
# and the upper-case names above.
#
# What it does:
#  1. Liveness: starts one signpost; per setting starts N small Python TCP
#     listener processes, each on its own loopback address 127.0.x.y, and
#     registers each as an instance of service live-<setting> with a TCP check
#     to its listener; waits until all are in DNS. Then SIGKILLs K listeners
#     and polls `live-<setting>.service.internal A` over UDP every POLL_MS ms
#     until each killed address is gone, recording the time from the kill.
#     Default settings (expect 20-30 s: the next probe within 10 s, then two
#     more failures): the K kills run in parallel. 1 s interval (expect 2-3 s):
#     one kill at a time, each a random part of an interval after the last
#     removal. Both settings run at once. It also checks that survivors stay,
#     that removed instances stay out, and that a removed instance's own name
#     answers NODATA. Reports min/median/mean/max per setting.
#  2. Throughput: S x N instances (svcNNNN/svcNNNN-I, addresses 127.1.x.y),
#     either each with `checks: [{"tcp": "127.0.0.1:<listener>", "interval":
#     "1s"}]` and `initial: passing`, pointing at a handful of Python listener
#     processes (so every check passes; they count the connections, so the
#     probe rate is measured, not assumed), or without checks. R rounds; each
#     round runs both kinds, alternating which goes first, and each run starts
#     a fresh signpost, registers the instances over the API, waits an
#     interval, measures the server's CPU while idle (the cost of the checks),
#     runs a 1 s dnsperf warm-up and then the measured dnsperf (-e, UDP, 50% A,
#     25% SRV _svc._tcp.service, 25% SRV svc.service, existing services), and
#     stops the server: only one signpost runs at a time, so the checks of one
#     never take CPU from the other's measurement (pausing a server with
#     SIGSTOP instead would line all its check timers up on SIGCONT). Records
#     QPS, latency, server CPU (utime+stime from /proc/PID/stat) and CPU us per
#     query, the probe rate during the runs, and the registry index (it moves
#     after registration only if check verdicts change). The listeners run on
#     the same machine: their CPU (reported) competes with signpost's and
#     dnsperf's, as the probes' kernel work does.
#  3. Prints the tables and writes the raw results JSON.
# Everything listens on 127.0.0.1 / 127.0.0.0/8 only; every process it starts
# is stopped on exit, error or Ctrl-C. A default run takes about 3-4 minutes
# (part 1 about 50 s, part 2 about 2.5 minutes), plus the build.
#
# Examples:
#   scripts/bench-liveness.sh
#   scripts/bench-liveness.sh --parts liveness -k 20 -n 30
#   scripts/bench-liveness.sh --parts throughput -r 5 -l 20
#
# Needs dnsperf (package dnsperf), python3, curl, setsid (util-linux), ps
# (procps) and, unless SIGNPOST_BIN is set, cargo.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER="$SCRIPT_DIR/bench_liveness.py"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "bench-liveness: $*" >&2; exit 2; }
say() { echo "bench-liveness: $*" >&2; }

LIVE_INSTANCES=${LIVE_INSTANCES:-20}
KILLS=${KILLS:-10}
FAST_INTERVAL=${FAST_INTERVAL-1s}
POLL_MS=${POLL_MS:-10}
SERVICES=${SERVICES:-1000}
PER_SERVICE=${PER_SERVICE:-10}
CHECK_INTERVAL=${CHECK_INTERVAL:-1s}
LISTENERS=${LISTENERS:-4}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-10}
THREADS=${THREADS:-1}
IDLE=${IDLE:-5}
PARTS=liveness,throughput
STORE_KIND=
OUT=
KEEP_TMP=0

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    if [[ $1 == --*=* ]]; then   # --name=value
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case $1 in
        -n|--instances) need_arg "$@"; LIVE_INSTANCES=$2; shift 2 ;;
        -k|--kills) need_arg "$@"; KILLS=$2; shift 2 ;;
        --fast-interval) [[ $# -ge 2 ]] || die "$1 needs a value"; FAST_INTERVAL=$2; shift 2 ;;
        --poll-ms) need_arg "$@"; POLL_MS=$2; shift 2 ;;
        -s|--services) need_arg "$@"; SERVICES=$2; shift 2 ;;
        --per-service) need_arg "$@"; PER_SERVICE=$2; shift 2 ;;
        --check-interval) need_arg "$@"; CHECK_INTERVAL=$2; shift 2 ;;
        --listeners) need_arg "$@"; LISTENERS=$2; shift 2 ;;
        -r|--rounds) need_arg "$@"; ROUNDS=$2; shift 2 ;;
        -l|--duration) need_arg "$@"; DURATION=$2; shift 2 ;;
        -c|--clients) need_arg "$@"; CLIENTS=$2; shift 2 ;;
        -T|--threads) need_arg "$@"; THREADS=$2; shift 2 ;;
        --idle) need_arg "$@"; IDLE=$2; shift 2 ;;
        --parts) need_arg "$@"; PARTS=$2; shift 2 ;;
        --store) need_arg "$@"; STORE_KIND=$2; shift 2 ;;
        -o|--out) need_arg "$@"; OUT=$2; shift 2 ;;
        --keep-tmp) KEEP_TMP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

for v in LIVE_INSTANCES KILLS POLL_MS SERVICES PER_SERVICE LISTENERS ROUNDS DURATION CLIENTS THREADS IDLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
    (( ${!v} >= 1 )) || die "$v must be at least 1"
done
(( LIVE_INSTANCES <= 250 )) || die "at most 250 instances per liveness setting"
(( KILLS <= LIVE_INSTANCES )) || die "KILLS ($KILLS) must not exceed the instances ($LIVE_INSTANCES)"
(( SERVICES <= 9999 )) || die "at most 9999 services (names are svc0001..svc9999)"
(( SERVICES * PER_SERVICE <= 16000000 )) || die "too many instances"
dur_re='^[0-9]+(ms|s|m)$'
[[ -z $FAST_INTERVAL || $FAST_INTERVAL =~ $dur_re ]] || die "--fast-interval: a duration like 1s or 500ms"
[[ $CHECK_INTERVAL =~ $dur_re ]] || die "--check-interval: a duration like 1s or 500ms"
DO_LIVENESS=0 DO_THROUGHPUT=0
IFS=, read -r -a part_list <<<"$PARTS"
for p in "${part_list[@]}"; do
    case $p in
        liveness) DO_LIVENESS=1 ;;
        throughput) DO_THROUGHPUT=1 ;;
        *) die "unknown part '$p' (liveness, throughput)" ;;
    esac
done
(( DO_LIVENESS + DO_THROUGHPUT )) || die "no parts to run"

# --- tools -----------------------------------------------------------------

find_bin() { # NAME: in PATH or in the sbin directories
    command -v "$1" 2>/dev/null || { for d in /usr/sbin /sbin /usr/local/sbin; do
        [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done; return 1; }
}
missing=()
DNSPERF=${DNSPERF:-$(find_bin dnsperf || true)}
if (( DO_THROUGHPUT )) && [[ ! -x $DNSPERF ]]; then missing+=("dnsperf (package dnsperf)"); fi
command -v python3 >/dev/null || missing+=("python3 (package python3)")
command -v curl >/dev/null || missing+=("curl (package curl)")
command -v setsid >/dev/null || missing+=("setsid (package util-linux)")
command -v ps >/dev/null || missing+=("ps (package procps)")
if [[ -z ${SIGNPOST_BIN:-} ]]; then
    command -v cargo >/dev/null || missing+=("cargo (rustup, or set SIGNPOST_BIN)")
fi
if (( ${#missing[@]} )); then
    say "missing tools:"
    printf '  %s\n' "${missing[@]}" >&2
    die "install them, e.g. apt-get install dnsperf python3 curl"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die "needs Python 3.8 or newer"
[[ -f $HELPER ]] || die "missing $HELPER"
[[ -r /proc/self/stat ]] || die "needs Linux /proc (CPU is read from it)"

# --- build -----------------------------------------------------------------

if [[ -z ${SIGNPOST_BIN:-} ]]; then
    say "building signpost (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) \
        || die "cargo build --release failed (if someone is mid-edit in src/, retry in a minute)"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target="$ROOT/$target"
    SIGNPOST_BIN="$target/release/signpost"
fi
[[ -x $SIGNPOST_BIN ]] || die "signpost binary $SIGNPOST_BIN is not executable"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-./bench-results/liveness-$STAMP.json}
[[ $OUT == /* ]] || OUT="$PWD/${OUT#./}"

# --- processes and cleanup ---------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-liveness.XXXXXX")
mkdir -p "$TMP/zones-empty" "$TMP/logs"
declare -A PID=()   # server name -> pid (setsid: also its process group)
RUNNER=             # the helper while it runs (setsid: its own process group)
CLEANED=0

alive() { # PID: exists and is not a zombie
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

stop_pid() { # PID: a process started with setsid: TERM, then KILL; its group too
    local pid=$1 i
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "process $pid did not stop on SIGTERM within 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    # Anything left in its process group.
    kill -KILL -- "-$pid" 2>/dev/null || true
}

stop_servers() {
    local name
    for name in "${!PID[@]}"; do
        stop_pid "${PID[$name]}"
        unset "PID[$name]"
    done
}

cleanup() {
    local rc=$?
    set +e
    (( CLEANED )) && return
    CLEANED=1
    trap - EXIT INT TERM HUP
    if [[ -n $RUNNER ]] && alive "$RUNNER"; then
        kill -TERM "$RUNNER" 2>/dev/null   # it stops its listeners and dnsperf
        for ((i = 0; i < 50; i++)); do alive "$RUNNER" || break; sleep 0.1; done
    fi
    [[ -n $RUNNER ]] && { kill -KILL -- "-$RUNNER" 2>/dev/null; wait "$RUNNER" 2>/dev/null; }
    stop_servers
    if (( KEEP_TMP )); then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Runs the helper in its own process group, in the background, and waits, so
# that a signal to this script is handled at once; the group is killed on exit.
helper() {
    setsid python3 "$HELPER" "$@" &
    RUNNER=$!
    local rc=0
    wait "$RUNNER" || rc=$?
    RUNNER=
    return "$rc"
}

API= DNS_PORT=
start_signpost() { # NAME: sets API, DNS_PORT and PID[NAME]
    local name=$1 i api= dns= out="$TMP/logs/$1.out" err="$TMP/logs/$1.err"
    local args=(--dns-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --zones-dir "$TMP/zones-empty"
                --data-dir "$TMP/data-$name")
    [[ -n $STORE_KIND ]] && args+=(--store "$STORE_KIND")
    RUST_LOG=${SIGNPOST_LOG:-info,hickory_server=warn,hickory_proto=warn} \
        setsid "$SIGNPOST_BIN" serve "${args[@]}" >"$out" 2>"$err" </dev/null &
    PID[$name]=$!
    for ((i = 0; i < 300; i++)); do
        api=$(sed -n 's|^api listening on http://\([^ ]*\).*|\1|p' "$out")
        dns=$(sed -n 's|^dns listening on \([^ ]*\).*|\1|p' "$out")
        [[ -n $api && -n $dns ]] && break
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $api || -z $dns ]]; then
        cat "$err" >&2
        die "signpost ($name) did not start (see above)"
    fi
    curl -sf --max-time 5 "http://$api/health" >/dev/null || die "signpost ($name) API http://$api/health did not answer"
    API="http://$api" DNS_PORT=${dns##*:}
    say "$name: pid ${PID[$name]}, api $API, dns 127.0.0.1:$DNS_PORT"
}

# --- metadata --------------------------------------------------------------

git_head() { # without running git: read .git/HEAD and the ref it names
    local head ref
    head=$(cat "$ROOT/.git/HEAD" 2>/dev/null) || return 0
    if [[ $head == ref:* ]]; then
        ref=${head#ref: }
        cat "$ROOT/.git/$ref" 2>/dev/null \
            || awk -v r="$ref" '$2 == r {print $1}' "$ROOT/.git/packed-refs" 2>/dev/null || true
    else
        echo "$head"
    fi
}
META="$TMP/meta.json"
BENCH_STARTED=$STAMP BENCH_BIN=$SIGNPOST_BIN BENCH_GIT=$(git_head) \
BENCH_VERSION=$("$SIGNPOST_BIN" --version 2>/dev/null || true) \
BENCH_DNSPERF=$("$DNSPERF" -h 2>&1 | grep -m1 -io 'version [0-9][^ ]*' | awk '{print $2}' || true) \
BENCH_ARGS="parts=$PARTS instances=$LIVE_INSTANCES kills=$KILLS fast_interval=$FAST_INTERVAL poll_ms=$POLL_MS services=$SERVICES per_service=$PER_SERVICE check_interval=$CHECK_INTERVAL listeners=$LISTENERS rounds=$ROUNDS duration=$DURATION clients=$CLIENTS threads=$THREADS idle=$IDLE store=${STORE_KIND:-default}" \
python3 - "$META" <<'EOF'
import json, os, platform, sys
e = os.environ
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
json.dump({
    "tool": "scripts/bench-liveness.sh", "started": e["BENCH_STARTED"],
    "config": dict(kv.split("=", 1) for kv in e["BENCH_ARGS"].split()),
    "environment": {"cpus": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
                    "python": platform.python_version(), "signpost": e["BENCH_VERSION"].strip(),
                    "signpost_bin": e["BENCH_BIN"], "git_head": e["BENCH_GIT"].strip(),
                    "dnsperf": e["BENCH_DNSPERF"].strip(),
                    "loadavg_at_start": open("/proc/loadavg").read().strip()},
}, open(sys.argv[1], "w"), indent=1)
EOF

# --- part 1: liveness --------------------------------------------------------

report_args=(--meta "$META" --json-out "$OUT")
if (( DO_LIVENESS )); then
    say "== liveness: $LIVE_INSTANCES instances per setting, $KILLS kills (default checks${FAST_INTERVAL:+ and interval $FAST_INTERVAL})"
    start_signpost liveness
    helper liveness --api "$API" --dns-port "$DNS_PORT" --instances "$LIVE_INSTANCES" \
        --kills "$KILLS" --fast-interval "$FAST_INTERVAL" --poll-ms "$POLL_MS" \
        --out "$TMP/liveness.json" || die "the liveness part failed (see above)"
    stop_servers
    report_args+=(--liveness "$TMP/liveness.json" --log "$TMP/logs/liveness.err")
fi

# --- part 2: throughput ------------------------------------------------------

if (( DO_THROUGHPUT )); then
    say "== throughput: $SERVICES x $PER_SERVICE instances, TCP checks every $CHECK_INTERVAL or none;" \
        "$ROUNDS rounds x 2 runs of $DURATION s, each on a fresh signpost"
    helper throughput --signpost "$SIGNPOST_BIN" --store "$STORE_KIND" --data-root "$TMP" \
        --zones-dir "$TMP/zones-empty" --log-dir "$TMP/logs" \
        --rust-log "${SIGNPOST_LOG:-info,hickory_server=warn,hickory_proto=warn}" \
        --services "$SERVICES" --per-service "$PER_SERVICE" --listeners "$LISTENERS" \
        --check-interval "$CHECK_INTERVAL" --rounds "$ROUNDS" --duration "$DURATION" \
        --clients "$CLIENTS" --threads "$THREADS" --idle "$IDLE" \
        --dnsperf "$DNSPERF" --queries-file "$TMP/queries.txt" --out "$TMP/throughput.json" \
        || die "the throughput part failed (see above)"
    report_args+=(--throughput "$TMP/throughput.json")
    for f in "$TMP"/logs/checks-*.err "$TMP"/logs/no-checks-*.err; do
        [[ -f $f ]] && report_args+=(--log "$f")
    done
fi

python3 "$HELPER" report "${report_args[@]}"
