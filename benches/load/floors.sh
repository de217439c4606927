#!/usr/bin/env bash
# How far the stack under cutover lets it go: CPU per request at a fixed
# rate of nginx, the floor examples and cutover, each paired with nginx
# per round.
#
# The floors are proxies with no features: examples/hyper_floor.rs (hyper's
# server and client), examples/inline_floor.rs (hyper's server, the upstream
# exchange in the request's own future, as cutover does it) and
# examples/maps_floor.rs (no hyper: heads parsed into `http`'s types and
# encoded from them by a loop of its own) and examples/raw_floor.rs (no
# hyper and no header map: heads parsed in place and forwarded as they
# came). What cutover spends above the inline floor is its own work and its
# features; what the inline floor spends above the maps floor is hyper's
# server, which a server of cutover's own keeping the request path's types
# could save; above the raw floor, hyper's server and the header maps,
# which is what one forwarding heads as bytes could save at most. instructions.sh counts the same proxies'
# instructions; this reads their CPU time, which is what the fixed-rate goal
# is stated in.
#
# Every proxy runs at once, one worker each, pinned to PROXY_CPU; the
# backend (the load benchmark's nginx) and the load tool run on LOAD_CPU. In
# each round every proxy takes one slice of RATE requests/s over 50
# connections, in an order that rotates from round to round, and its CPU
# time is read from schedstat around the slice (fixed_rate.sh). Printed:
# for each proxy beside nginx, its per-round ratio to nginx's CPU per
# request and their median and bootstrap interval (paired.py).
#
# Usage: benches/load/floors.sh
# Settings (environment):
#   ROUNDS=8 SLICE_SECONDS=5 RATE=5000 PROXY_CPU=0 LOAD_CPU=1
#   PROXIES="nginx raw maps inline cutover"  nginx first; `floor` adds hyper_floor
#   RATE_TOOL=oha (the default here; h2load sends in bursts every 10 ms)
#   SKIP_BUILD=1   use the existing binaries (target/release/cutover and
#                  target/release/examples/*_floor)
#   BASE_PORT=18500 OUT=/tmp/cutover-floors-<time>
# Output in OUT: meta.txt, slices.tsv (one line per slice), summary.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-8}"
SLICE_SECONDS="${SLICE_SECONDS:-5}"
RATE="${RATE:-5000}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18500}"
OUT="${OUT:-/tmp/cutover-floors-$(date -u +%Y%m%dT%H%M%SZ)}"
PROXIES="${PROXIES:-nginx raw maps inline cutover}"
RATE_TOOL="${RATE_TOOL:-oha}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"
# shellcheck source=benches/load/fixed_rate.sh
source "$HERE/fixed_rate.sh"

read -r -a proxies <<<"$PROXIES"
[[ ${proxies[0]:-} == nginx ]] || die "PROXIES starts with nginx, the anchor the others are read against"
for p in "${proxies[@]}"; do
    case $p in nginx | raw | maps | inline | floor | cutover) ;; *) die "unknown proxy '$p' in PROXIES (nginx raw maps inline floor cutover)" ;; esac
done
for tool in nginx taskset curl python3; do command -v "$tool" >/dev/null || die "needs $tool"; done
if [[ $RATE_TOOL == oha ]]; then
    OHA="${OHA:-$(oha_path)}"
    [[ -x $OHA ]] || die "RATE_TOOL=oha needs oha (cargo install --locked oha)"
    export OHA
else
    command -v h2load >/dev/null || die "RATE_TOOL=h2load needs h2load"
fi

build_floor
if [[ " $PROXIES " == *" cutover "* ]]; then
    if [[ -z "${SKIP_BUILD:-}" ]]; then CUTOVER_BIN="$(build_cutover_plain)"; else CUTOVER_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/cutover"; fi
    [[ -x "$CUTOVER_BIN" ]] || die "no cutover binary at $CUTOVER_BIN"
fi
prepare_tmp cutover-floors
[[ " $PROXIES " == *" cutover "* ]] && private_cutover_copy
check_ports_free

declare -A PORT=([nginx]=$NGINX [raw]=$RAW [maps]=$MAPS [inline]=$INLINE [floor]=$FLOOR [cutover]=$CUTOVER) PID=()
start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"
wait_http "http://127.0.0.1:$BACKEND/"
for p in "${proxies[@]}"; do
    case $p in
        nginx) start nginx "$PROXY_CPU" nginx -c "$TMP/proxy-nginx.conf" -p "$TMP" ;;
        raw) start raw "$PROXY_CPU" "$RAW_BIN" "127.0.0.1:$RAW" "127.0.0.1:$BACKEND" ;;
        maps) start maps "$PROXY_CPU" "$MAPS_BIN" "127.0.0.1:$MAPS" "127.0.0.1:$BACKEND" ;;
        inline) start inline "$PROXY_CPU" "$INLINE_BIN" "127.0.0.1:$INLINE" "127.0.0.1:$BACKEND" ;;
        floor) start floor "$PROXY_CPU" "$FLOOR_BIN" "127.0.0.1:$FLOOR" "127.0.0.1:$BACKEND" ;;
        cutover) start cutover "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/cutover.toml" --no-watch ;;
    esac
    PID[$p]=$(eval echo "\$PID_$p")
done
for p in "${proxies[@]}"; do
    wait_http "http://127.0.0.1:${PORT[$p]}/"
    # nginx's master forks the worker that does the work; its CPU is read
    # from the whole process tree
    fixed_rate "http://127.0.0.1:${PORT[$p]}/" 2 "$OUT/warmup-$p.txt" >/dev/null
done

tree_cpu_ns() { # pid: CPU time of it and its children
    local total=0 pid
    for pid in $1 $(pgrep -P "$1" || true); do total=$((total + $(cpu_ns "$pid"))); done
    echo "$total"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tree: cutover $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src examples Cargo.toml Cargo.lock || echo '+dirty')"
    echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $([[ $RATE_TOOL == oha ]] && "$OHA" --version || h2load --version | head -1)"
    echo "settings: ROUNDS=$ROUNDS SLICE_SECONDS=$SLICE_SECONDS RATE=$RATE RATE_TOOL=$RATE_TOOL PROXIES=\"$PROXIES\" PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU"
} | tee "$OUT/meta.txt" >&2

printf 'round\tproxy\trequests\tcpu_us_per_req\tp50_ms\tp99_ms\terrors\n' >"$OUT/slices.tsv"
n=${#proxies[@]}
for rnd in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
        p=${proxies[$(((i + rnd) % n))]}
        t0=$(tree_cpu_ns "${PID[$p]}")
        read -r req p50 p99 errs <<<"$(fixed_rate "http://127.0.0.1:${PORT[$p]}/" "$SLICE_SECONDS" "$OUT/r$rnd-$p.txt")"
        t1=$(tree_cpu_ns "${PID[$p]}")
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p died; see $OUT/$p.stderr"
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "$p" "$req" "$cpu_us" "$p50" "$p99" "$errs" >>"$OUT/slices.tsv"
        log "r$rnd $p: $req requests, $cpu_us CPU-µs/req, p50 $p50 ms, p99 $p99 ms, errors $errs"
    done
done

{
    for p in "${proxies[@]:1}"; do
        echo "== $p ÷ nginx"
        python3 "$HERE/paired.py" "$OUT/slices.tsv" nginx "$p" cpu_us_per_req
    done
    echo "== CPU-µs per request, median over rounds"
    awk -F'\t' 'NR > 1 { v[$2] = v[$2] " " $4 } END { for (p in v) print p, v[p] }' "$OUT/slices.tsv" |
        while read -r p vals; do
            printf '%s\t%s\n' "$p" "$(tr ' ' '\n' <<<"$vals" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
        done
} | tee "$OUT/summary.txt"
