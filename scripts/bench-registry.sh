#!/usr/bin/env bash
# bench-registry.sh: the durable store under load: registration throughput,
# PUT->DNS visibility, restart time and memory, with the memory store beside
# it for comparison. A benchmark for people to read; it asserts nothing about
# timings, but exits non-zero if a write fails, is lost over a restart or
# never becomes visible in DNS.
#
# Usage: scripts/bench-registry.sh [options]
#
#   -c, --clients N         HTTP clients for throughput and fills, one
#                           keep-alive connection each (CLIENTS, default 64)
#   -n, --count N           new registrations in the throughput phase
#                           (THROUGHPUT_COUNT, default 50000)
#   -u, --updates N         address updates of random existing instances in
#                           a second throughput phase, spread over every
#                           service (UPDATE_COUNT, default 50000; 0: none)
#       --max-secs S        upper bound on each throughput phase
#                           (THROUGHPUT_MAX_SECS, default 60)
#   -s, --sizes LIST        registry sizes at which visibility is measured
#                           (VIS_SIZES, default 10000,100000)
#       --samples N         visibility samples per size (VIS_SAMPLES, 2000)
#       --vis-clients N     visibility clients (VIS_CLIENTS, default 8)
#       --per-service N     instances per service (PER_SERVICE, default 100)
#       --restart-size N    size at which the embedded server is restarted;
#                           must be one of the sizes, 0: none
#                           (RESTART_SIZE, default: the largest size)
#       --restarts N        restarts at that size (RESTARTS, default 3)
#       --no-memory         skip the memory-store comparison (MEMORY=0)
#       --memory-short      take the memory store only through the first
#                           size and the throughput phases, not to every
#                           size (MEMORY_FULL=0; default 1)
#   -o, --out FILE          raw results as JSON (default
#                           ./bench-results/registry-<UTC timestamp>.json)
#       --keep-tmp          keep the temporary directory (data dirs, logs)
#   -h, --help              this text
#
# Environment: SIGNPOST_BIN and BENCH_BIN (skip the build and use these:
# the server binary and the registry_bench example), SIGNPOST_LOG (RUST_LOG
# for the servers; default info, hickory at warn), TMPDIR (where the data
# dirs go: the disk under test), and the upper-case names above.
#
# What it does: builds signpost and its examples (release); starts an
# embedded-store server and a memory-store server on 127.0.0.1, port 0, each
# with a fresh data dir; runs examples/registry_bench.rs, which per server
#   1. fills the registry to the first size (instance i<k> in service
#      s<k / per-service>, 64 clients),
#   2. measures PUT->DNS visibility there: 8 clients, each sample a PUT (half
#      new instances in existing services, half address changes) and, as soon
#      as it returns 200, UDP queries for <id>.<service>.instance.internal A
#      until the new address is answered (retries are counted: there should
#      be none),
#   3. measures throughput: N new registrations by 64 clients (consecutive
#      ids, so one group commit touches one or two services), then N address
#      updates of random existing instances (one commit touches many
#      services); PUT latency p50/p99, server and load-generator CPU, bytes
#      the data directory's block device wrote per registration,
#   4. fills to each further size (the memory store too, unless
#      --memory-short); at the restart size (embedded) records RSS,
#      stops the server with SIGTERM, starts it again on the same data dir and
#      times it (the `registry loaded ... elapsed_ms` it logs, and exec to the
#      `dns listening` line), checks the instance count (GET /v1/services),
#      the index and 300 addresses in DNS, repeats; then visibility again;
# then prints the summary and writes the JSON. Everything listens on
# 127.0.0.1 only; every process started is stopped on exit, error or Ctrl-C.
# A default run takes about 2-4 minutes on 2 cores, plus the build.
#
# Examples:
#   scripts/bench-registry.sh
#   scripts/bench-registry.sh -n 20000 -s 10000,50000 --restarts 1
#   CLIENTS=128 scripts/bench-registry.sh --no-memory
#
# Needs cargo (unless SIGNPOST_BIN and BENCH_BIN are set), setsid and kill
# (util-linux, procps), getconf (libc-bin), and curl.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "bench-registry: $*" >&2; exit 2; }
say() { echo "bench-registry: $*" >&2; }

CLIENTS=${CLIENTS:-64}
THROUGHPUT_COUNT=${THROUGHPUT_COUNT:-50000}
UPDATE_COUNT=${UPDATE_COUNT:-50000}
THROUGHPUT_MAX_SECS=${THROUGHPUT_MAX_SECS:-60}
VIS_SIZES=${VIS_SIZES:-10000,100000}
VIS_SAMPLES=${VIS_SAMPLES:-2000}
VIS_CLIENTS=${VIS_CLIENTS:-8}
PER_SERVICE=${PER_SERVICE:-100}
RESTART_SIZE=${RESTART_SIZE:-}
RESTARTS=${RESTARTS:-3}
MEMORY=${MEMORY:-1}
MEMORY_FULL=${MEMORY_FULL:-1}
OUT=${OUT:-}
KEEP_TMP=0

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        -c|--clients) need_arg "$@"; CLIENTS=$2; shift 2 ;;
        -n|--count) need_arg "$@"; THROUGHPUT_COUNT=$2; shift 2 ;;
        -u|--updates) need_arg "$@"; UPDATE_COUNT=$2; shift 2 ;;
        --max-secs) need_arg "$@"; THROUGHPUT_MAX_SECS=$2; shift 2 ;;
        -s|--sizes) need_arg "$@"; VIS_SIZES=$2; shift 2 ;;
        --samples) need_arg "$@"; VIS_SAMPLES=$2; shift 2 ;;
        --vis-clients) need_arg "$@"; VIS_CLIENTS=$2; shift 2 ;;
        --per-service) need_arg "$@"; PER_SERVICE=$2; shift 2 ;;
        --restart-size) need_arg "$@"; RESTART_SIZE=$2; shift 2 ;;
        --restarts) need_arg "$@"; RESTARTS=$2; shift 2 ;;
        --no-memory) MEMORY=0; shift ;;
        --memory-short) MEMORY_FULL=0; shift ;;
        -o|--out) need_arg "$@"; OUT=$2; shift 2 ;;
        --keep-tmp) KEEP_TMP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

for v in CLIENTS THROUGHPUT_COUNT UPDATE_COUNT THROUGHPUT_MAX_SECS VIS_SAMPLES VIS_CLIENTS PER_SERVICE RESTARTS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
for v in CLIENTS VIS_CLIENTS PER_SERVICE THROUGHPUT_MAX_SECS; do
    (( ${!v} >= 1 )) || die "$v must be at least 1"
done
[[ $VIS_SIZES =~ ^[0-9]+(,[0-9]+)*$ ]] || die "VIS_SIZES must be a comma-separated list of numbers"
largest=0
IFS=, read -r -a size_list <<<"$VIS_SIZES"
for n in "${size_list[@]}"; do (( n > largest )) && largest=$n; done
RESTART_SIZE=${RESTART_SIZE:-$largest}
[[ $RESTART_SIZE =~ ^[0-9]+$ ]] || die "RESTART_SIZE must be a whole number"
if (( RESTART_SIZE > 0 )); then
    found=0
    for n in "${size_list[@]}"; do (( n == RESTART_SIZE )) && found=1; done
    (( found )) || die "the restart size $RESTART_SIZE is not one of the sizes ($VIS_SIZES)"
fi
(( largest <= 16000000 )) || die "at most 16,000,000 instances (addresses are 10.x.y.z)"

# --- tools -----------------------------------------------------------------

missing=()
if [[ -z ${SIGNPOST_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    command -v cargo >/dev/null || missing+=("cargo (rustup; or set SIGNPOST_BIN and BENCH_BIN)")
fi
command -v setsid >/dev/null || missing+=("setsid (package util-linux)")
type -P kill >/dev/null || missing+=("kill (package procps)")
command -v getconf >/dev/null || missing+=("getconf (package libc-bin)")
command -v curl >/dev/null || missing+=("curl (package curl)")
command -v ps >/dev/null || missing+=("ps (package procps)")
command -v awk >/dev/null || missing+=("awk (package mawk or gawk)")
if (( ${#missing[@]} )); then
    say "missing tools:"
    printf '  %s\n' "${missing[@]}" >&2
    die "install them, e.g. apt-get install util-linux procps curl"
fi
[[ -r /proc/self/status ]] || die "needs Linux /proc (RSS and CPU are read from it)"

# --- build -----------------------------------------------------------------

if [[ -z ${SIGNPOST_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    say "building signpost and its examples (cargo build --release --bins --examples)"
    (cd "$ROOT" && cargo build --release --quiet --bins --examples) \
        || die "cargo build --release failed (if someone is mid-edit in src/, retry in a minute)"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target="$ROOT/$target"
    SIGNPOST_BIN=${SIGNPOST_BIN:-$target/release/signpost}
    BENCH_BIN=${BENCH_BIN:-$target/release/examples/registry_bench}
fi
[[ -x $SIGNPOST_BIN ]] || die "signpost binary $SIGNPOST_BIN is not executable"
[[ -x $BENCH_BIN ]] || die "benchmark binary $BENCH_BIN is not executable"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-./bench-results/registry-$STAMP.json}
[[ $OUT == /* ]] || OUT="$PWD/${OUT#./}"

# --- processes and cleanup ---------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-registry.XXXXXX")
mkdir -p "$TMP/zones-empty" "$TMP/logs"
RESTART_PID_FILE="$TMP/restarted.pid"
declare -A PID=()   # store -> pid (setsid: also its process group)
RUNNER=
CLEANED=0

stop_pid() { # PID: TERM, wait up to 10 s, then KILL; also its process group
    local pid=$1 i
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            # A zombie of ours counts as stopped.
            [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]] && break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]; then
            say "process $pid did not stop on SIGTERM within 10 s; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? name
    set +e
    (( CLEANED )) && return
    CLEANED=1
    trap - EXIT INT TERM HUP
    if [[ -n $RUNNER ]] && kill -0 "$RUNNER" 2>/dev/null; then
        kill -TERM "$RUNNER" 2>/dev/null
        wait "$RUNNER" 2>/dev/null
    fi
    # A server the benchmark restarted (it is not our child).
    if [[ -s $RESTART_PID_FILE ]]; then
        stop_pid "$(cat "$RESTART_PID_FILE")"
    fi
    for name in "${!PID[@]}"; do
        stop_pid "${PID[$name]}"
    done
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

# --- servers ---------------------------------------------------------------

API= DNS=
start_server() { # STORE: sets API, DNS and PID[STORE]
    local store=$1 i out="$TMP/logs/$1.out" err="$TMP/logs/$1.err"
    RUST_LOG=${SIGNPOST_LOG:-info,hickory_server=warn,hickory_proto=warn} \
        setsid "$SIGNPOST_BIN" serve --dns-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
        --store "$store" --data-dir "$TMP/data-$store" --zones-dir "$TMP/zones-empty" \
        >"$out" 2>"$err" </dev/null &
    PID[$store]=$!
    API= DNS=
    for ((i = 0; i < 300; i++)); do
        API=$(sed -n 's|^api listening on http://\([^ ]*\).*|\1|p' "$out")
        DNS=$(sed -n 's|^dns listening on \([^ ]*\).*|\1|p' "$out")
        [[ -n $API && -n $DNS ]] && break
        kill -0 "${PID[$store]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $API || -z $DNS ]]; then
        cat "$err" >&2
        die "signpost ($store store) did not start (see above)"
    fi
    curl -sf --max-time 5 "http://$API/health" >/dev/null \
        || die "signpost ($store store) API http://$API/health did not answer"
    say "$store store: pid ${PID[$store]}, api $API, dns $DNS"
}

# --- is the machine idle? ---------------------------------------------------

busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
b0=$(busy_ticks); sleep 1; b1=$(busy_ticks)
busy=$(awk -v d=$((b1 - b0)) -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / t }')
if awk -v b="$busy" 'BEGIN { exit !(b > 0.25) }'; then
    say "warning: $busy CPU cores were busy before the start: something else is running;" \
        "figures will be lower (the table's 'other cores' column shows how much CPU it took)"
fi

# --- metadata --------------------------------------------------------------

json_str() { # a JSON string of $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/ }
    s=${s//$'\t'/ }
    printf '"%s"' "$s"
}
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
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
fs_type=$(df --output=fstype "$TMP" 2>/dev/null | tail -n 1 || true)
fs_type=${fs_type:-unknown}
META="$TMP/meta.json"
{
    printf '{"tool": "scripts/bench-registry.sh", "started": %s, ' "$(json_str "$STAMP")"
    printf '"cpus": %d, "cpu_model": %s, ' "$(nproc)" "$(json_str "$cpu_model")"
    printf '"kernel": %s, ' "$(json_str "$(uname -r)")"
    printf '"memory_total_kb": %d, ' "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    printf '"loadavg_at_start": %s, ' "$(json_str "$(cat /proc/loadavg)")"
    printf '"busy_cores_before_start": %s, ' "$busy"
    printf '"data_dir_fs": %s, "tmp": %s, ' "$(json_str "$fs_type")" "$(json_str "$TMP")"
    printf '"signpost": %s, ' "$(json_str "$("$SIGNPOST_BIN" --version 2>/dev/null || true)")"
    printf '"signpost_bin": %s, ' "$(json_str "$SIGNPOST_BIN")"
    printf '"rustc": %s, ' "$(json_str "$(rustc --version 2>/dev/null || true)")"
    printf '"git_head": %s}\n' "$(json_str "$(git_head)")"
} >"$META"

# --- run -------------------------------------------------------------------

start_server embedded
E_API=$API E_DNS=$DNS
memory_args=()
if (( MEMORY )); then
    start_server memory
    memory_args=(--memory-api "$API" --memory-dns "$DNS" --memory-pid "${PID[memory]}")
    (( MEMORY_FULL )) && memory_args+=(--memory-full)
fi

say "sizes $VIS_SIZES, $PER_SERVICE instances per service; throughput $THROUGHPUT_COUNT" \
    "new registrations and $UPDATE_COUNT updates by $CLIENTS clients; visibility $VIS_SAMPLES samples by $VIS_CLIENTS clients;" \
    "restart at $RESTART_SIZE x $RESTARTS; data in $TMP ($fs_type)"

"$BENCH_BIN" \
    --bin "$SIGNPOST_BIN" \
    --embedded-api "$E_API" --embedded-dns "$E_DNS" --embedded-pid "${PID[embedded]}" \
    --data-dir "$TMP/data-embedded" --zones-dir "$TMP/zones-empty" \
    --restart-pid-file "$RESTART_PID_FILE" --log-dir "$TMP/logs" \
    "${memory_args[@]}" \
    --clients "$CLIENTS" --throughput-count "$THROUGHPUT_COUNT" \
    --update-count "$UPDATE_COUNT" --throughput-max-secs "$THROUGHPUT_MAX_SECS" \
    --vis-sizes "$VIS_SIZES" --vis-samples "$VIS_SAMPLES" --vis-clients "$VIS_CLIENTS" \
    --per-service "$PER_SERVICE" --restart-size "$RESTART_SIZE" --restarts "$RESTARTS" \
    --out "$OUT" --meta "$META" &
RUNNER=$!
rc=0
wait "$RUNNER" || rc=$?
RUNNER=
(( rc == 0 )) || die "the benchmark failed (exit $rc): see above; rerun with --keep-tmp to keep the server logs"

# Warnings and errors the servers logged, if any.
logged=$(cat "$TMP"/logs/*.err 2>/dev/null | grep -E ' (WARN|ERROR) ' | head -n 20 || true)
if [[ -n $logged ]]; then
    echo
    echo "Server warnings/errors (first 20):"
    echo "$logged"
fi
echo
echo "raw results: $OUT"
