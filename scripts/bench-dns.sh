#!/usr/bin/env bash
# bench-dns.sh: signpost's DNS throughput next to Knot DNS and NSD serving the
# same records, measured with dnsperf. A benchmark for people to read; it
# asserts nothing about timings.
#
# Usage: scripts/bench-dns.sh [options]
#
#   -s, --services N      services in the registry (SERVICES, default 100)
#   -n, --instances N     instances per service (INSTANCES, default 10)
#   -r, --rounds N        rounds; each round runs every server once, in
#                         rotating order (ROUNDS, default 3)
#   -l, --duration S      seconds per dnsperf run (DURATION, default 10)
#   -c, --clients N       dnsperf -c (CLIENTS, default 10)
#   -T, --threads N       dnsperf -T (THREADS, default 1)
#       --tcp             query over TCP (dnsperf -m tcp) instead of UDP
#       --no-edns         send queries without EDNS (default: dnsperf -e, as
#                         resolvers do; without it big SRV answers lose glue)
#       --placements LIST pinned,unpinned (default both). pinned: servers run
#                         under `taskset -c 0`, dnsperf under `taskset -c 1`
#       --server-cpus L   CPU list for servers when pinned (default 0)
#       --client-cpus L   CPU list for dnsperf when pinned (default 1)
#       --servers LIST    subset of signpost,knot,nsd (default all three)
#       --warmup S        unrecorded dnsperf run per server first (default 1, 0: none)
#       --percentiles     also run dnsperf -v and compute p50/p90/p99/p99.9
#                         latency (costs dnsperf some throughput)
#       --timeout S       dnsperf -t, seconds before a query counts as lost (5)
#       --queries N       lines in the generated query file (default 100000)
#       --dnsperf-arg A   extra dnsperf argument; repeat for more
#       --nsd-servers N   NSD server-count (default 1, NSD's default)
#       --knot-workers N  Knot udp-workers (default: Knot's, one per CPU)
#       --signpost-workers N  signpost --workers, its async runtime's threads
#                         (default: signpost's, half the CPUs it may run on,
#                         at least one)
#       --signpost-store KIND  signpost --store (default: signpost's own). Each
#                         start gets a fresh --data-dir in the temporary directory
#       --writers N       also run every signpost round a second time, at once,
#                         while N writers re-register random instances with a
#                         new weight (one keep-alive connection each), and check
#                         SRV answers meanwhile (WRITERS, default 0: off)
#       --write-rate R    PUTs per second per writer (WRITE_RATE, default 10;
#                         0: back to back, as fast as they go)
#       --writer-procs P  processes the Python writers are spread over
#                         (default 1; more if they fall short of the target
#                         rate and there are CPUs to spare)
#       --python-writers  write with bench_dns.py's Python writers instead of
#                         examples/bench_writers.rs (built by this script, or
#                         WRITERS_BIN). The Python ones take about 40% of a
#                         core for 1,000 PUTs/s, which pinned is dnsperf's
#                         CPU; the Rust ones a few percent
#       --memory          memory mode instead of the DNS runs: signpost alone,
#                         its RSS empty and with each registry size loaded (no
#                         dnsperf, Knot or NSD)
#       --memory-sizes L  registry sizes (MEMORY_SIZES, default 100000,1000000);
#                         signpost is started fresh for each
#       --memory-per-service N  instances per service (default 100: 1000
#                         services for 100000)
#       --memory-load HOW import: one PUT /v1/import of an export document
#                         (default; falls back to put when the server has no
#                         import); put: one PUT per instance, 16 connections
#       --memory-no-restart  skip the restart on the same data (by default each
#                         size is measured again after a restart, loaded from
#                         disk; not with --signpost-store memory)
#   -o, --out FILE        raw results as JSON (default
#                         ./bench-results/dns-<UTC timestamp>.json)
#       --keep-tmp        keep the temporary directory (configs, zone, logs)
#   -h, --help            this text
#
# Environment: SIGNPOST_BIN (skip `cargo build --release` and use this
# binary), SIGNPOST_LOG (RUST_LOG for signpost; default its own: info, hickory
# at warn), KNOTD, NSD, DNSPERF (binaries), and the upper-case names above.
# The raw results go to ./bench-results/memory-<UTC timestamp>.json in memory
# mode.
#
# What it does: builds signpost (release); generates S x N instances
# (service svcNNNN, instance svcNNNN-I, address 10.x.y.z, varied weights, one
# meta pair; from 10000 services the numbers get a fifth digit, svc00001);
# registers them in signpost over the admin API (parallel keep-alive
# connections); writes the same records as the zone `internal.`
# (SOA, NS, A and SRV at svcNNNN.service, SRV at _svcNNNN._tcp.service, A and
# TXT at svcNNNN-I.svcNNNN.instance) for Knot and NSD (answer rotation on in
# both, rate limiting off in NSD); compares a sample of answers from all three;
# then per placement runs dnsperf against each server in turn for R rounds,
# with a query mix of ~45% A, ~45% SRV (both name forms), ~5% NXDOMAIN and ~5%
# NODATA. Per run it records dnsperf's QPS, lost queries, latency (avg, min,
# max, stddev), response size, the server's CPU seconds (utime+stime of all
# its threads and processes, from /proc/PID/stat) and so CPU us per answered
# query, dnsperf's own CPU, and the server socket's UDP receive drops.
#
# With --writers, each signpost run is followed by a second one with the
# writers (examples/bench_writers.rs, one thread, a separate process; pinned,
# it shares dnsperf's CPUs): each PUTs
# the full body of a random instance from the registry with a new weight
# (one never used before, so every PUT changes something), paced to the rate.
# Meanwhile a checker asks SRV (both name forms, random services, ~50 a
# second, over UDP, again over TCP if truncated) and counts every answer whose
# instance set (targets and ports, priority 10) is not exactly the registered
# one (should be 0). Reported for signpost: QPS read-only and with writers and
# their ratio per round, CPU us per query of both, writes/s achieved, write
# errors, PUT latency p50/p99, how far the index moved, the checker's counts.
#
# With --memory: per size, starts signpost (fresh data dir), reads VmRSS from
# /proc/PID/status once it is steady with an empty registry, loads the size
# (S = size / per-service services; PUT /v1/import of a generated export
# document, or PUTs), waits until DNS serves the new index (the SOA serial)
# and RSS is steady again, and reports RSS, RSS minus the empty figure, bytes
# per instance and the peak (VmHWM); then restarts it on the same data and
# does the same. Nothing else runs.
#
# Everything listens on 127.0.0.1 only; every process it starts is stopped on
# exit, error or Ctrl-C. Run time is about
#   placements x servers x (warmup + rounds x duration + ~2 s) + set-up,
# plus placements x rounds x (duration + ~2 s) with --writers.
#
# Examples:
#   scripts/bench-dns.sh                              # 100x10, 3 rounds x 10 s
#   scripts/bench-dns.sh -s 1000 -n 10 -r 5 -l 20
#   scripts/bench-dns.sh -s 100 -n 10 -r 2 -l 5 --placements pinned --tcp
#   scripts/bench-dns.sh --servers signpost -r 3 -l 10 --writers 4 --write-rate 50
#   scripts/bench-dns.sh --memory --memory-sizes 10000,100000
#
# Needs knotd (Debian package knot), nsd (nsd), dnsperf (dnsperf), curl
# (curl), taskset (util-linux), python3 and, unless SIGNPOST_BIN is set, cargo;
# --memory needs only curl, python3 and signpost.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER="$SCRIPT_DIR/bench_dns.py"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "bench-dns: $*" >&2; exit 2; }
say() { echo "bench-dns: $*" >&2; }

SERVICES=${SERVICES:-100}
INSTANCES=${INSTANCES:-10}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-10}
THREADS=${THREADS:-1}
MODE=udp
EDNS=1
PLACEMENTS=pinned,unpinned
SERVER_CPUS=0
CLIENT_CPUS=1
SERVERS=signpost,knot,nsd
WARMUP=1
PERCENTILES=0
QUERY_TIMEOUT=5
QUERIES=100000
DNSPERF_ARGS=()
NSD_SERVERS=1
KNOT_WORKERS=
SIGNPOST_WORKERS=
SIGNPOST_STORE_KIND=
WRITERS=${WRITERS:-0}
WRITE_RATE=${WRITE_RATE:-10}
WRITER_PROCS=1
PYTHON_WRITERS=0
WRITERS_BIN=${WRITERS_BIN:-}
MEMORY_MODE=0
MEMORY_SIZES=${MEMORY_SIZES:-100000,1000000}
MEMORY_PER_SERVICE=100
MEMORY_LOAD=import
MEMORY_RESTART=1
OUT=
KEEP_TMP=0

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    if [[ $1 == --*=* ]]; then   # --name=value
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case $1 in
        -s|--services) need_arg "$@"; SERVICES=$2; shift 2 ;;
        -n|--instances) need_arg "$@"; INSTANCES=$2; shift 2 ;;
        -r|--rounds) need_arg "$@"; ROUNDS=$2; shift 2 ;;
        -l|--duration) need_arg "$@"; DURATION=$2; shift 2 ;;
        -c|--clients) need_arg "$@"; CLIENTS=$2; shift 2 ;;
        -T|--threads) need_arg "$@"; THREADS=$2; shift 2 ;;
        --tcp) MODE=tcp; shift ;;
        --no-edns) EDNS=0; shift ;;
        --placements) need_arg "$@"; PLACEMENTS=$2; shift 2 ;;
        --server-cpus) need_arg "$@"; SERVER_CPUS=$2; shift 2 ;;
        --client-cpus) need_arg "$@"; CLIENT_CPUS=$2; shift 2 ;;
        --servers) need_arg "$@"; SERVERS=$2; shift 2 ;;
        --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
        --percentiles) PERCENTILES=1; shift ;;
        --timeout) need_arg "$@"; QUERY_TIMEOUT=$2; shift 2 ;;
        --queries) need_arg "$@"; QUERIES=$2; shift 2 ;;
        --dnsperf-arg) need_arg "$@"; DNSPERF_ARGS+=("$2"); shift 2 ;;
        --nsd-servers) need_arg "$@"; NSD_SERVERS=$2; shift 2 ;;
        --knot-workers) need_arg "$@"; KNOT_WORKERS=$2; shift 2 ;;
        --signpost-workers) need_arg "$@"; SIGNPOST_WORKERS=$2; shift 2 ;;
        --signpost-store) need_arg "$@"; SIGNPOST_STORE_KIND=$2; shift 2 ;;
        --writers) need_arg "$@"; WRITERS=$2; shift 2 ;;
        --write-rate) need_arg "$@"; WRITE_RATE=$2; shift 2 ;;
        --writer-procs) need_arg "$@"; WRITER_PROCS=$2; shift 2 ;;
        --python-writers) PYTHON_WRITERS=1; shift ;;
        --memory) MEMORY_MODE=1; shift ;;
        --memory-sizes) need_arg "$@"; MEMORY_SIZES=$2; shift 2 ;;
        --memory-per-service) need_arg "$@"; MEMORY_PER_SERVICE=$2; shift 2 ;;
        --memory-load) need_arg "$@"; MEMORY_LOAD=$2; shift 2 ;;
        --memory-no-restart) MEMORY_RESTART=0; shift ;;
        -o|--out) need_arg "$@"; OUT=$2; shift 2 ;;
        --keep-tmp) KEEP_TMP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

for v in SERVICES INSTANCES ROUNDS DURATION CLIENTS THREADS WARMUP QUERY_TIMEOUT QUERIES NSD_SERVERS \
         WRITERS WRITER_PROCS MEMORY_PER_SERVICE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
for v in SERVICES INSTANCES ROUNDS DURATION CLIENTS THREADS QUERIES NSD_SERVERS WRITER_PROCS \
         MEMORY_PER_SERVICE; do
    (( ${!v} >= 1 )) || die "$v must be at least 1"
done
[[ $WRITE_RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WRITE_RATE must be a number of PUTs per second, not '$WRITE_RATE'"
# Instance i of a service has port 8000+i; the k-th instance has address
# 10.0.0.0 + k.
MAX_INSTANCES=$(( 65535 - 8000 ))
MAX_TOTAL=$(( (1 << 24) - 2 ))
(( INSTANCES <= MAX_INSTANCES )) || die "at most $MAX_INSTANCES instances per service (ports 8001..65535)"
(( SERVICES * INSTANCES <= MAX_TOTAL )) || die "at most $MAX_TOTAL instances in all (addresses in 10.0.0.0/8)"
(( MEMORY_PER_SERVICE <= MAX_INSTANCES )) || die "--memory-per-service: at most $MAX_INSTANCES"
[[ $MEMORY_LOAD == import || $MEMORY_LOAD == put ]] || die "--memory-load: import or put, not '$MEMORY_LOAD'"
IFS=, read -r -a MEMORY_SIZE_LIST <<<"$MEMORY_SIZES"
if (( MEMORY_MODE )); then
    (( ${#MEMORY_SIZE_LIST[@]} >= 1 )) || die "--memory-sizes: no sizes"
    for size in "${MEMORY_SIZE_LIST[@]}"; do
        [[ $size =~ ^[1-9][0-9]*$ ]] || die "--memory-sizes: '$size' is not a positive whole number"
        (( size <= MAX_TOTAL )) || die "--memory-sizes: at most $MAX_TOTAL (addresses in 10.0.0.0/8)"
    done
    # signpost alone; the DNS options do not apply.
    SERVERS=signpost
    PLACEMENTS=unpinned
    WRITERS=0
fi
for v in KNOT_WORKERS SIGNPOST_WORKERS; do
    [[ -z ${!v} || ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number"
done
IFS=, read -r -a PLACEMENT_LIST <<<"$PLACEMENTS"
for p in "${PLACEMENT_LIST[@]}"; do
    [[ $p == pinned || $p == unpinned ]] || die "unknown placement '$p' (pinned, unpinned)"
done
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    [[ $s == signpost || $s == knot || $s == nsd ]] || die "unknown server '$s' (signpost, knot, nsd)"
done
(( ${#SERVER_LIST[@]} >= 1 )) || die "no servers"

has() { local s; for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
(( WRITERS == 0 )) || has signpost || die "--writers: signpost is not among --servers"

# --- tools -----------------------------------------------------------------

find_bin() { # NAME: in PATH or in the sbin directories
    command -v "$1" 2>/dev/null || { for d in /usr/sbin /sbin /usr/local/sbin; do
        [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }; done; return 1; }
}
missing=()
KNOTD=${KNOTD:-$(find_bin knotd || true)}
NSD=${NSD:-$(find_bin nsd || true)}
DNSPERF=${DNSPERF:-$(find_bin dnsperf || true)}
if has knot && [[ ! -x $KNOTD ]]; then missing+=("knotd (package knot)"); fi
if has nsd && [[ ! -x $NSD ]]; then missing+=("nsd (package nsd)"); fi
if (( ! MEMORY_MODE )); then
    [[ -x $DNSPERF ]] || missing+=("dnsperf (package dnsperf)")
    command -v taskset >/dev/null || missing+=("taskset (package util-linux)")
fi
command -v curl >/dev/null || missing+=("curl (package curl)")
command -v python3 >/dev/null || missing+=("python3 (package python3)")
command -v setsid >/dev/null || missing+=("setsid (package util-linux)")
if [[ -z ${SIGNPOST_BIN:-} ]] && has signpost; then
    command -v cargo >/dev/null || missing+=("cargo (rustup, or set SIGNPOST_BIN)")
fi
if (( ${#missing[@]} )); then
    say "missing tools:"
    printf '  %s\n' "${missing[@]}" >&2
    die "install them, e.g. apt-get install knot nsd dnsperf curl"
fi
[[ -f $HELPER ]] || die "missing $HELPER"

NCPU=$(nproc)
if [[ " ${PLACEMENT_LIST[*]} " == *" pinned "* ]] && (( NCPU < 2 )); then
    say "only $NCPU CPU: pinned placement would share it; running unpinned only"
    PLACEMENT_LIST=(unpinned)
fi

# --- build -----------------------------------------------------------------

if has signpost; then
    if [[ -z ${SIGNPOST_BIN:-} ]]; then
        say "building signpost (cargo build --release)"
        (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
        target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target="$ROOT/$target"
        SIGNPOST_BIN="$target/release/signpost"
    fi
    [[ -x $SIGNPOST_BIN ]] || die "signpost binary $SIGNPOST_BIN is not executable"
    if (( WRITERS )) && [[ -z $WRITERS_BIN ]] && (( ! PYTHON_WRITERS )); then
        say "building the writers (cargo build --release --example bench_writers)"
        (cd "$ROOT" && cargo build --release --example bench_writers) \
            || die "cargo build --release --example bench_writers failed"
        target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target="$ROOT/$target"
        WRITERS_BIN="$target/release/examples/bench_writers"
    fi
    # Flags differ between versions of signpost: use what this one has.
    SIGNPOST_SERVE_HELP=$("$SIGNPOST_BIN" serve --help 2>&1 || true)
    if [[ -n $SIGNPOST_STORE_KIND && $SIGNPOST_SERVE_HELP != *--store* ]]; then
        die "--signpost-store: this signpost has no --store option"
    fi
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if (( MEMORY_MODE )); then
    OUT=${OUT:-./bench-results/memory-$STAMP.json}
else
    OUT=${OUT:-./bench-results/dns-$STAMP.json}
fi

# --- processes and cleanup ---------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-dns.XXXXXX")
declare -A PID=()      # server name -> pid (also its process group: setsid)
declare -A PORT=()     # server name -> DNS port
RUNNER=                # the helper while it runs in the background
CLEANED=0

alive() { # PID: exists and is not a zombie
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

session_left() { # PID: live (non-zombie) processes of the session PID leads
    { ps -s "$1" -o pid=,stat= 2>/dev/null || true; } | awk '$2 !~ /^Z/ {print $1}'
}

stop_pid() { # PID: a server started with setsid: TERM it, then what is left
    local pid=$1 i left
    [[ -n $pid ]] || return 0
    # The server first, so that it can stop its own children (NSD's).
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "process $pid did not stop on SIGTERM within 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # Its process group (= its session, from setsid), if anything outlived it.
    for ((i = 0; i < 20; i++)); do
        left=$(session_left "$pid")
        [[ -z $left ]] && return 0
        (( i == 0 )) && { kill -TERM -- "-$pid" 2>/dev/null || true; }
        (( i == 10 )) && { kill -KILL -- "-$pid" 2>/dev/null || true; }
        sleep 0.1
    done
    [[ -z $(session_left "$pid") ]] || say "processes left of $pid: $(session_left "$pid" | tr '\n' ' ')"
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
    if [[ -n $RUNNER ]] && kill -0 "$RUNNER" 2>/dev/null; then
        kill -TERM "$RUNNER" 2>/dev/null || true   # it kills its dnsperf
        wait "$RUNNER" 2>/dev/null || true
    fi
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

# Runs the helper in the background and waits, so that a signal to this
# script is handled at once rather than when the helper finishes.
helper() {
    python3 "$HELPER" "$@" &
    RUNNER=$!
    local rc=0
    wait "$RUNNER" || rc=$?
    RUNNER=
    return "$rc"
}

# --- data ------------------------------------------------------------------

DATA="$TMP/data"
mkdir -p "$DATA" "$TMP/zones-empty"
if (( ! MEMORY_MODE )); then
    helper gen --services "$SERVICES" --instances "$INSTANCES" --queries "$QUERIES" --dir "$DATA"
fi

# --- servers ---------------------------------------------------------------

# Seconds signpost may take to start listening (it loads its registry first).
SIGNPOST_START_WAIT=20
(( MEMORY_MODE )) && SIGNPOST_START_WAIT=900
SIGNPOST_LOGNAME=signpost   # its stdout and stderr: DIR/NAME.out, DIR/NAME.err

start_signpost() { # DIR PREFIX...: start it (API, PORT[signpost], PID[signpost])
    local dir=$1 i api dns log=$SIGNPOST_LOGNAME; shift
    local envs=("RUST_LOG=${SIGNPOST_LOG:-info,hickory_server=warn,hickory_proto=warn}")
    # SIGNPOST_WORKERS for --workers; TOKIO_WORKER_THREADS for builds before it.
    [[ -n $SIGNPOST_WORKERS ]] && envs+=("SIGNPOST_WORKERS=$SIGNPOST_WORKERS" "TOKIO_WORKER_THREADS=$SIGNPOST_WORKERS")
    local args=(--dns-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --zones-dir "$TMP/zones-empty")
    # A fresh store each start: nothing from an earlier start or from ./data.
    [[ $SIGNPOST_SERVE_HELP == *--data-dir* ]] && args+=(--data-dir "$dir/signpost-data")
    [[ -n $SIGNPOST_STORE_KIND ]] && args+=(--store "$SIGNPOST_STORE_KIND")
    : >"$dir/$log.out"   # there before the loop below reads it
    env "${envs[@]}" "$@" setsid "$SIGNPOST_BIN" serve "${args[@]}" \
        >"$dir/$log.out" 2>"$dir/$log.err" </dev/null &
    PID[signpost]=$!
    for ((i = 0; i < SIGNPOST_START_WAIT * 10; i++)); do
        api=$(sed -n 's|^api listening on http://\([^ ]*\).*|\1|p' "$dir/$log.out")
        dns=$(sed -n 's|^dns listening on \([^ ]*\).*|\1|p' "$dir/$log.out")
        [[ -n $api && -n $dns ]] && break
        alive "${PID[signpost]}" || break
        sleep 0.1
    done
    if [[ -z $api || -z $dns ]]; then
        cat "$dir/$log.err" >&2
        die "signpost did not start (see above)"
    fi
    PORT[signpost]=${dns##*:}
    API="http://$api"
    SIGNPOST_STORE_SEEN=$(grep -o -m1 'store="[^"]*"' "$dir/$log.err" | cut -d'"' -f2 || true)
    curl -sf --max-time 5 "$API/health" >/dev/null || die "signpost API $API/health did not answer"
}

register_signpost() { # the generated registry, over the API
    helper register --api "$API" --registry "$DATA/registry.jsonl" \
        || die "registering instances in signpost failed"
}

start_knot() { # DIR PREFIX...
    local dir=$1 port; shift
    port=$(python3 "$HELPER" freeport)
    mkdir -p "$dir/knot/db"
    cp "$DATA/internal.zone" "$dir/knot/internal.zone"
    {
        echo "server:"
        echo "    rundir: \"$dir/knot\""
        echo "    listen: 127.0.0.1@$port"
        [[ -n $KNOT_WORKERS ]] && echo "    udp-workers: $KNOT_WORKERS"
        echo "    background-workers: 1"
        echo "    answer-rotation: on"
        echo "database:"
        echo "    storage: \"$dir/knot/db\""
        echo "log:"
        echo "  - target: stderr"
        echo "    any: warning"
        echo "template:"
        echo "  - id: default"
        echo "    storage: \"$dir/knot\""
        echo "    zonefile-sync: -1"
        echo "    zonefile-load: whole"
        echo "    journal-content: none"
        echo "zone:"
        echo "  - domain: internal."
        echo "    file: \"$dir/knot/internal.zone\""
    } >"$dir/knot/knot.conf"
    "$@" setsid "$KNOTD" -c "$dir/knot/knot.conf" >"$dir/knot.out" 2>"$dir/knot.err" </dev/null &
    PID[knot]=$!
    PORT[knot]=$port
    if ! helper wait --port "$port" --pid "${PID[knot]}" --name knot; then
        cat "$dir/knot.err" >&2
        die "knotd did not start (config $dir/knot/knot.conf)"
    fi
}

start_nsd() { # DIR PREFIX...
    local dir=$1 port; shift
    port=$(python3 "$HELPER" freeport)
    mkdir -p "$dir/nsd"
    cp "$DATA/internal.zone" "$dir/nsd/internal.zone"
    cat >"$dir/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1
    port: $port
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$dir/nsd"
    database: ""
    zonelistfile: "$dir/nsd/zone.list"
    pidfile: "$dir/nsd/nsd.pid"
    xfrdfile: "$dir/nsd/xfrd.state"
    xfrdir: "$dir/nsd"
    server-count: $NSD_SERVERS
    verbosity: 1
    hide-version: yes
    round-robin: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: internal
    zonefile: "$dir/nsd/internal.zone"
EOF
    "$@" setsid "$NSD" -d -c "$dir/nsd/nsd.conf" >"$dir/nsd.out" 2>"$dir/nsd.err" </dev/null &
    PID[nsd]=$!
    PORT[nsd]=$port
    if ! helper wait --port "$port" --pid "${PID[nsd]}" --name nsd; then
        cat "$dir/nsd.err" >&2
        die "nsd did not start (config $dir/nsd/nsd.conf)"
    fi
}

# --- metadata --------------------------------------------------------------

version_of() { "$@" 2>&1 | grep -m1 -io 'version [0-9][^ ]*' | awk '{print $2}' || true; }
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
BENCH_STARTED=$STAMP BENCH_SERVICES=$SERVICES BENCH_INSTANCES=$INSTANCES BENCH_ROUNDS=$ROUNDS \
BENCH_DURATION=$DURATION BENCH_CLIENTS=$CLIENTS BENCH_THREADS=$THREADS BENCH_MODE=$MODE \
BENCH_EDNS=$EDNS BENCH_PLACEMENTS="${PLACEMENT_LIST[*]}" BENCH_SERVERS="${SERVER_LIST[*]}" \
BENCH_SERVER_CPUS=$SERVER_CPUS BENCH_CLIENT_CPUS=$CLIENT_CPUS BENCH_WARMUP=$WARMUP \
BENCH_PERCENTILES=$PERCENTILES BENCH_TIMEOUT=$QUERY_TIMEOUT BENCH_QUERIES=$QUERIES \
BENCH_DNSPERF_ARGS="${DNSPERF_ARGS[*]}" BENCH_NSD_SERVERS=$NSD_SERVERS \
BENCH_KNOT_WORKERS=$KNOT_WORKERS BENCH_SIGNPOST_WORKERS=$SIGNPOST_WORKERS \
BENCH_SIGNPOST_STORE=$SIGNPOST_STORE_KIND \
BENCH_WRITERS=$WRITERS BENCH_WRITE_RATE=$WRITE_RATE BENCH_WRITER_PROCS=$WRITER_PROCS \
BENCH_MEMORY_MODE=$MEMORY_MODE BENCH_MEMORY_SIZES="${MEMORY_SIZE_LIST[*]}" \
BENCH_MEMORY_PER_SERVICE=$MEMORY_PER_SERVICE BENCH_MEMORY_LOAD=$MEMORY_LOAD \
BENCH_MEMORY_RESTART=$MEMORY_RESTART \
BENCH_SIGNPOST_BIN=${SIGNPOST_BIN:-} \
BENCH_V_SIGNPOST=$(has signpost && "$SIGNPOST_BIN" --version 2>/dev/null || true) \
BENCH_V_KNOT=$(has knot && version_of "$KNOTD" -V) \
BENCH_V_NSD=$(has nsd && version_of "$NSD" -v) \
BENCH_V_DNSPERF=$([[ -x $DNSPERF ]] && version_of "$DNSPERF" -h) \
BENCH_GIT_HEAD=$(git_head) BENCH_NCPU=$NCPU \
python3 - "$META" <<'EOF'
import json, os, platform, sys
e = os.environ
cpu = ""
try:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
except OSError:
    pass
meta = {
    "tool": "scripts/bench-dns.sh",
    "started": e["BENCH_STARTED"],
    "config": {
        "services": int(e["BENCH_SERVICES"]), "instances": int(e["BENCH_INSTANCES"]),
        "rounds": int(e["BENCH_ROUNDS"]), "duration": int(e["BENCH_DURATION"]),
        "clients": int(e["BENCH_CLIENTS"]), "threads": int(e["BENCH_THREADS"]),
        "mode": e["BENCH_MODE"], "edns": e["BENCH_EDNS"] == "1",
        "placements": e["BENCH_PLACEMENTS"].split(), "servers": e["BENCH_SERVERS"].split(),
        "server_cpus": e["BENCH_SERVER_CPUS"], "client_cpus": e["BENCH_CLIENT_CPUS"],
        "warmup": int(e["BENCH_WARMUP"]), "percentiles": e["BENCH_PERCENTILES"] == "1",
        "query_timeout": int(e["BENCH_TIMEOUT"]), "query_file_lines": int(e["BENCH_QUERIES"]),
        "dnsperf_extra_args": e["BENCH_DNSPERF_ARGS"].split(),
        "nsd_server_count": int(e["BENCH_NSD_SERVERS"]),
        "knot_udp_workers": e["BENCH_KNOT_WORKERS"] or "default (one per CPU)",
        "signpost_worker_threads": e["BENCH_SIGNPOST_WORKERS"] or "default (one per CPU)",
        "signpost_store": e["BENCH_SIGNPOST_STORE"] or "default",
        "knot_answer_rotation": True, "nsd_round_robin": True, "nsd_rrl": "off",
        "query_mix": "45% A svc.service; 22.5% SRV _svc._tcp.service; 22.5% SRV svc.service; "
                     "5% NXDOMAIN; 5% NODATA",
        "writers": int(e["BENCH_WRITERS"]),
        "write_rate_per_writer": float(e["BENCH_WRITE_RATE"]),
        "writer_processes": int(e["BENCH_WRITER_PROCS"]),
    },
    "environment": {
        "cpus": int(e["BENCH_NCPU"]), "cpu_model": cpu, "kernel": platform.release(),
        "python": platform.python_version(),
        "signpost": e["BENCH_V_SIGNPOST"].strip(), "signpost_bin": e["BENCH_SIGNPOST_BIN"],
        "git_head": e["BENCH_GIT_HEAD"].strip(),
        "knotd": e["BENCH_V_KNOT"].strip(), "nsd": e["BENCH_V_NSD"].strip(),
        "dnsperf": e["BENCH_V_DNSPERF"].strip(),
    },
}
if e["BENCH_MEMORY_MODE"] == "1":
    meta["tool"] = "scripts/bench-dns.sh --memory"
    meta["config"] = {
        "mode": "memory",
        "memory_sizes": [int(x) for x in e["BENCH_MEMORY_SIZES"].split()],
        "memory_per_service": int(e["BENCH_MEMORY_PER_SERVICE"]),
        "memory_load": e["BENCH_MEMORY_LOAD"],
        "memory_restart": e["BENCH_MEMORY_RESTART"] == "1",
        "signpost_worker_threads": e["BENCH_SIGNPOST_WORKERS"] or "default (one per CPU)",
        "signpost_store": e["BENCH_SIGNPOST_STORE"] or "default",
    }
    for k in ("knotd", "nsd", "dnsperf"):
        meta["environment"].pop(k)
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

# --- memory mode -------------------------------------------------------------

if (( MEMORY_MODE )); then
    restart=$MEMORY_RESTART
    if [[ $SIGNPOST_STORE_KIND == memory || $SIGNPOST_SERVE_HELP != *--data-dir* ]]; then
        restart=0   # nothing to load after a restart
    fi
    say "memory: sizes ${MEMORY_SIZE_LIST[*]}, $MEMORY_PER_SERVICE instances per service," \
        "loaded by $MEMORY_LOAD$( ((restart)) && echo ', then a restart on the same data')"
    SIZE_RESULTS=()
    for size in "${MEMORY_SIZE_LIST[@]}"; do
        dir="$TMP/memory-$size"
        mkdir -p "$dir"
        say "== memory $size: starting signpost"
        SIGNPOST_LOGNAME=signpost
        start_signpost "$dir"
        helper memory --phase load --pid "${PID[signpost]}" --api "$API" \
            --dns-port "${PORT[signpost]}" --size "$size" --per-service "$MEMORY_PER_SERVICE" \
            --load "$MEMORY_LOAD" --dir "$dir" --data-dir "$dir/signpost-data" \
            --log "$dir/signpost.err" --out "$dir/memory-$size.json" \
            || die "memory $size: failed (signpost's log: $dir/signpost.err; --keep-tmp keeps it)"
        stop_servers
        if (( restart )); then
            say "memory $size: restarting signpost on the same data"
            SIGNPOST_LOGNAME=signpost-restart
            start_signpost "$dir"
            helper memory --phase restart --pid "${PID[signpost]}" --api "$API" \
                --dns-port "${PORT[signpost]}" --log "$dir/signpost-restart.err" \
                --out "$dir/memory-$size.json" \
                || die "memory $size: after the restart: failed (log: $dir/signpost-restart.err)"
            stop_servers
        fi
        SIZE_RESULTS+=(--size "$dir/memory-$size.json")
    done
    helper memory-report --meta "$META" "${SIZE_RESULTS[@]}" \
        --store-seen "${SIGNPOST_STORE_SEEN:-}" --json-out "$OUT"
    exit 0
fi

per_run=$(( WARMUP + ROUNDS * DURATION + 2 * ROUNDS + 1 ))
estimate=$(( ${#PLACEMENT_LIST[@]} * ${#SERVER_LIST[@]} * per_run + 10 * ${#PLACEMENT_LIST[@]} ))
writes=
if (( WRITERS )); then
    estimate=$(( estimate + ${#PLACEMENT_LIST[@]} * ROUNDS * (DURATION + 2) ))
    rate="$WRITE_RATE PUT/s"
    [[ $WRITE_RATE =~ ^0*(\.0*)?$ ]] && rate="back-to-back PUTs"
    writes=" signpost again with $WRITERS writers x $rate;"
fi
say "$SERVICES services x $INSTANCES instances; ${MODE^^}$( ((EDNS)) && echo ' with EDNS'); servers ${SERVER_LIST[*]};" \
    "placements ${PLACEMENT_LIST[*]}; $ROUNDS rounds x $DURATION s;$writes about ${estimate} s in all"

# --- the runs --------------------------------------------------------------

PLACEMENT_RESULTS=()
LOGS=()
for placement in "${PLACEMENT_LIST[@]}"; do
    dir="$TMP/$placement"
    mkdir -p "$dir"
    prefix=()
    client_cpus=
    if [[ $placement == pinned ]]; then
        prefix=(taskset -c "$SERVER_CPUS")
        client_cpus=$CLIENT_CPUS
    fi
    say "== $placement: starting ${SERVER_LIST[*]}"
    if has signpost; then
        start_signpost "$dir" "${prefix[@]}"
        register_signpost
    fi
    has knot && start_knot "$dir" "${prefix[@]}"
    has nsd && start_nsd "$dir" "${prefix[@]}"

    check_args=() run_args=()
    for s in "${SERVER_LIST[@]}"; do
        check_args+=(--server "$s=${PORT[$s]}")
        run_args+=(--server "$s:${PORT[$s]}:${PID[$s]}")
        LOGS+=(--log "$placement/$s=$dir/$s.err")
    done
    helper check "${check_args[@]}" --queries "$DATA/queries.txt" --registry "$DATA/registry.jsonl" \
        $( ((EDNS)) && echo --edns) --out "$dir/check-$placement.json"

    extra=()
    for a in "${DNSPERF_ARGS[@]}"; do extra+=(--dnsperf-arg="$a"); done
    if (( WRITERS )); then
        extra+=(--writers "$WRITERS" --write-rate "$WRITE_RATE" --writer-procs "$WRITER_PROCS"
                --api "$API" --registry "$DATA/registry.jsonl" --writers-bin "$WRITERS_BIN")
    fi
    helper run --placement "$placement" "${run_args[@]}" --queries "$DATA/queries.txt" \
        --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
        --clients "$CLIENTS" --threads "$THREADS" --mode "$MODE" \
        --query-timeout "$QUERY_TIMEOUT" --client-cpus "$client_cpus" --dnsperf "$DNSPERF" \
        $( ((EDNS)) && echo --edns) $( ((PERCENTILES)) && echo --percentiles) \
        "${extra[@]}" --note "signpost:store=${SIGNPOST_STORE_SEEN:-}" \
        --out "$dir/results-$placement.json"
    PLACEMENT_RESULTS+=(--placement "$dir/results-$placement.json")
    stop_servers
done

helper report --meta "$META" "${PLACEMENT_RESULTS[@]}" "${LOGS[@]}" --json-out "$OUT"
