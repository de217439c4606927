#!/usr/bin/env bash
# Per-request CPU cost of nginx, HAProxy and cutover, counted in instructions,
# with the cheapest proxy hyper and tokio can make as a floor.
#
# What it measures: the user-space instructions (callgrind's Ir) that each
# proxy executes per proxied HTTP/1.1 request, all its threads together.
# Kernel work (TCP over loopback, epoll) is not counted. That is fair here,
# because the three proxies make about the same syscalls per request (4-5; see the
# syscall tables in docs/performance.md), so the difference between them is
# user space.
#
# Why: the count barely depends on the machine. On a shared 2-core VM,
# wall-clock rates and CPU-µs/request (run.sh) move 10-20 % between runs;
# these counts moved by 1-2 % over repeated runs with 20 connections (how
# many events each epoll_wait returns varies a little), and much less
# with CONNS=1 (at most 0.5 %). So a change of a few percent in cutover's request path shows
# up. It is not a time: cache misses, branch mispredictions and the kernel
# are not in it.
#
# How: the fixed backend (one nginx worker, 13-byte body) runs natively. Each
# proxy in turn runs with one worker (nginx: master_process off, so the
# worker is the process valgrind runs; HAProxy: -db, nbthread 1; cutover:
# workers = 1, --no-watch; floor: examples/hyper_floor.rs, a bare hyper proxy
# on a current-thread runtime with one dedicated upstream connection per
# downstream connection; inline, only when asked for: examples/inline_floor.rs,
# the same with the upstream exchange written in the request's own future
# instead of hyper's client) under `valgrind --tool=callgrind`. The script waits
# until the proxy answers, warms it up with WARMUP_REQUESTS requests,
# zeroes the counters (callgrind_control -z), sends REQUESTS requests
# (h2load -t1 --h1 -cCONNS -n REQUESTS), checks that every one succeeded, dumps the counters
# (callgrind_control -d) and divides the dump's PROGRAM TOTALS by REQUESTS.
#
# Usage (from anywhere; needs root for apt-get, or the tools already there):
#   benches/load/instructions.sh                  # builds cutover first, with PGO (like run.sh)
#   SKIP_BUILD=1 benches/load/instructions.sh     # use the existing target/release/cutover
#   PROXIES=cutover SKIP_BUILD=1 benches/load/instructions.sh   # only cutover
# It takes about 15 seconds on the 2-core VM (plus the build and a first apt-get).
# Results: a table on stdout and $OUT/instructions.tsv; the callgrind files
# stay in $OUT for `callgrind_annotate` (the script prints the command).
#
# Environment:
#   REQUESTS=4000          measured requests per proxy
#   WARMUP_REQUESTS=1000   unmeasured requests first (valgrind's translation, pools, buffers)
#   CONNS=20               h2load connections (HTTP/1.1 keep-alive)
#   RATE=                  requests per second per connection (h2load --rps); unset: as fast
#                          as the proxy goes. A low rate (CONNS=20 RATE=10: 200 req/s, one
#                          request per wake-up) is the regime of run.sh's fixed-rate case,
#                          where per-wake-up work (timers, polling) is not shared by a batch.
#   CACHE=                 tiny: also simulate tiny caches (2 KiB L1, 16 KiB last level) and
#                          report the cache lines each request fetches (ILmr + DLmr + DLmw).
#                          With RATE=10 that approximates what a request costs in memory
#                          traffic when its caches went cold while the core idled, as at
#                          run.sh's fixed rate on a shared VM. Slower (about 3x).
#   PROXIES="nginx haproxy floor cutover"  proxies, measured in this order; add `inline`
#                          (examples/inline_floor.rs) to see what an inline client would save,
#                          `maps` (examples/maps_floor.rs) without hyper's server but with header
#                          maps, `raw` (examples/raw_floor.rs) with neither
#   PROXY_CPU=0 LOAD_CPU=1 cores for the proxy and for backend + h2load (no pinning on 1 core)
#   LOAD_PROTO=h1          h2c: the requests over HTTP/2 with prior knowledge, one stream at a
#                          time per connection (PROXIES=cutover only: cutover takes h2c on its
#                          HTTP/1.1 port, the others on ports of their own)
#   BASE_PORT=18100        ports BASE_PORT..BASE_PORT+29 on 127.0.0.1 are used (same layout as
#                          run.sh, other default, so both can run at the same time)
#   START_TIMEOUT=120      seconds a proxy under valgrind may take to answer
#   SKIP_INSTALL=1         do not apt-get anything (fail if a tool is missing)
#   PGO=1                  measure the profile-guided build the image ships (scripts/pgo-build.sh,
#                          target/pgo/cutover); PGO=0: a plain `cargo build --release`
#   SKIP_BUILD=1           use the existing binaries (target/pgo/cutover, or target/release/cutover
#                          with PGO=0, and target/release/examples/hyper_floor)
#   OUT=/path              where the table and callgrind files go
#                          (default /tmp/cutover-instructions-<utc time>)
#   KEEP_TMP=1             keep the rendered configs (the temp dir) after the run
#   CUTOVER_APPEND=        TOML appended to cutover's config, @TMP@ standing for the temp dir;
#                          e.g. '[access_log]' and 'to = "@TMP@/access.log"' on two lines
#                          counts what logging every request adds
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

REQUESTS="${REQUESTS:-4000}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-1000}"
CONNS="${CONNS:-20}"
RATE="${RATE:-}"
CACHE="${CACHE:-}"
PROXIES="${PROXIES:-nginx haproxy floor cutover}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18100}"
START_TIMEOUT="${START_TIMEOUT:-120}"
OUT="${OUT:-/tmp/cutover-instructions-$(date -u +%Y%m%dT%H%M%SZ)}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"

for v in REQUESTS WARMUP_REQUESTS CONNS BASE_PORT START_TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
[[ -z "$RATE" || "$RATE" =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive number (got '$RATE')"
[[ -z "$CACHE" || "$CACHE" == tiny ]] || die "CACHE must be empty or 'tiny' (got '$CACHE')"
CACHE_SIM=()
[[ "$CACHE" == tiny ]] && CACHE_SIM=(--cache-sim=yes --I1=2048,2,64 --D1=2048,2,64 --LL=16384,4,64)
((REQUESTS > 0)) || die "REQUESTS must be > 0"
for p in $PROXIES; do
    case $p in nginx|haproxy|floor|inline|maps|raw|cutover) ;; *) die "unknown proxy '$p' in PROXIES (nginx haproxy floor inline maps raw cutover)" ;; esac
done

# ---------------------------------------------------------------- install --
need_apt=()
command -v valgrind >/dev/null || need_apt+=(valgrind)
{ command -v callgrind_control >/dev/null && command -v callgrind_annotate >/dev/null; } || need_apt+=(valgrind)
command -v perl >/dev/null || need_apt+=(perl)   # callgrind_control and callgrind_annotate are Perl
command -v nginx >/dev/null || need_apt+=(nginx)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v curl >/dev/null || need_apt+=(curl)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v pgrep >/dev/null || need_apt+=(procps)
install_missing "${need_apt[@]}"

# ------------------------------------------------------------------ build --
if [[ " $PROXIES " == *" cutover "* ]]; then
    build_cutover
fi
if [[ " $PROXIES " == *" floor "* || " $PROXIES " == *" inline "* || " $PROXIES " == *" maps "* || " $PROXIES " == *" raw "* ]]; then
    build_floor
fi

# --------------------------------------------------------------- configs --
if (($(nproc) >= 2)); then
    PIN_PROXY=(taskset -c "$PROXY_CPU")
    PIN_LOAD=(taskset -c "$LOAD_CPU")
else
    warn "one core only: nothing is pinned"
    PIN_PROXY=()
    PIN_LOAD=()
fi
prepare_tmp cutover-instructions
# nginx as a single process: the one worker is the process valgrind runs
sed -i -e 's/^master_process on;/master_process off;/' "$TMP/proxy-nginx.conf"
grep -q '^master_process off;' "$TMP/proxy-nginx.conf" || die "could not set master_process off in proxy-nginx.conf"
grep -q '^worker_processes 1;' "$TMP/proxy-nginx.conf" || die "proxy-nginx.conf is not worker_processes 1"
grep -Eq '^[[:space:]]*nbthread 1$' "$TMP/haproxy.cfg" || die "haproxy.cfg is not nbthread 1"
grep -Eq '^workers = 1$' "$TMP/cutover.toml" || die "cutover.toml is not workers = 1"
[[ -z "${CUTOVER_APPEND:-}" ]] || printf '\n%s\n' "${CUTOVER_APPEND//@TMP@/$TMP}" >>"$TMP/cutover.toml"
[[ -z "${CUTOVER_BIN:-}" ]] || private_cutover_copy
cp "$TMP"/backend-nginx.conf "$TMP"/proxy-nginx.conf "$TMP"/haproxy.cfg "$TMP"/cutover.toml "$OUT/"

check_ports_free

# ---------------------------------------------------------------- helpers --
wait_http() { # url pid seconds: wait for a 200 while pid lives; returns 1 otherwise
    local url=$1 pid=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" == 200 ]] && return 0
        sleep 0.3
    done
    return 1
}

# h2load's "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
h2load_field() { # file word
    awk -v w="$2" '/^requests:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ "^" w) print $i }' "$1"
}
h2load_2xx() { awk '/^status codes:/ { gsub(/,/, ""); print $3 }' "$1"; }

# runs h2load for n requests; returns 1 unless all n got a 2xx. In the
# background plus `wait`, so that a signal to the script runs its trap at once
# (bash defers traps until a foreground command ends) and cleanup stops h2load.
load() { # url n outfile
    local lp ok two
    local paced=() proto=(--h1)
    [[ -n "$RATE" ]] && paced=(--rps "$RATE")
    [[ ${LOAD_PROTO:-h1} == h2c ]] && proto=()
    timeout 600 "${PIN_LOAD[@]}" h2load -t1 "${proto[@]}" -c"$CONNS" "${paced[@]}" -n "$2" "$1" >"$3" 2>&1 &
    lp=$!
    PIDS+=("$lp")
    wait "$lp" || true
    forget_pid "$lp"
    ok=$(h2load_field "$3" succeeded)
    two=$(h2load_2xx "$3")
    [[ "$ok" == "$2" && "$two" == "$2" ]]
}

# callgrind_control exits 0 even when it finds no callgrind process; it prints "OK" when it did the job
cg_control() { # -z|-d pid logfile
    local outp
    outp=$(timeout 60 callgrind_control "$1" "$2" 2>&1) || true
    printf '%s\n' "$outp" >>"$3"
    [[ "$outp" == *OK.* ]]
}

stop_pid() { # pid: TERM, wait up to 30 s, then KILL; reap it
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid still alive 30 s after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# ------------------------------------------------------------------ start --
log "results in $OUT; configs in $TMP"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), kernel $(uname -r)"
    echo "versions: $(valgrind --version), $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR==1 { print $3 }'), $(h2load --version | head -1), cutover $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
    echo "cutover build: ${CUTOVER_BUILD:-none}"
    echo "settings: REQUESTS=$REQUESTS WARMUP_REQUESTS=$WARMUP_REQUESTS CONNS=$CONNS RATE=${RATE:-unpaced} CACHE=${CACHE:-none} PROXIES=\"$PROXIES\""
} | tee "$OUT/meta.txt" >&2

"${PIN_LOAD[@]}" nginx -c "$TMP/backend-nginx.conf" -p "$TMP" >"$OUT/backend.stdout" 2>"$OUT/backend.stderr" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_http "http://127.0.0.1:$BACKEND/" "$BACKEND_PID" 10 || die "the backend did not answer 200; see $OUT/backend.stderr"

# ---------------------------------------------------------------- measure --
declare -A IR PER LINES FILE
MEASURED=()
SKIPPED=()

measure() { # proxy; returns 1 (after a warning) if it cannot be measured
    local p=$1 port cmd pid url dump ir
    case $p in
        nginx) port=$NGINX; cmd=(nginx -c "$TMP/proxy-nginx.conf" -p "$TMP") ;;
        haproxy) port=$HAPROXY; cmd=(haproxy -db -f "$TMP/haproxy.cfg") ;;
        cutover) port=$CUTOVER; cmd=("$CUTOVER_BIN" run --config "$TMP/cutover.toml" --no-watch) ;;
        floor) port=$FLOOR; cmd=("$FLOOR_BIN" "127.0.0.1:$FLOOR" "127.0.0.1:$BACKEND") ;;
        inline) port=$INLINE; cmd=("$INLINE_BIN" "127.0.0.1:$INLINE" "127.0.0.1:$BACKEND") ;;
        maps) port=$MAPS; cmd=("$MAPS_BIN" "127.0.0.1:$MAPS" "127.0.0.1:$BACKEND") ;;
        raw) port=$RAW; cmd=("$RAW_BIN" "127.0.0.1:$RAW" "127.0.0.1:$BACKEND") ;;
    esac
    url="http://127.0.0.1:$port/"
    log "$p: starting under callgrind"
    # env goes first: valgrind runs only the command it starts, not what that execs
    env RUST_LOG=warn "${PIN_PROXY[@]}" valgrind --tool=callgrind "${CACHE_SIM[@]}" --callgrind-out-file="$OUT/callgrind.$p.%p" \
        "${cmd[@]}" >"$OUT/$p.stdout" 2>"$OUT/$p.stderr" &
    pid=$!
    PIDS+=("$pid")
    if ! wait_http "$url" "$pid" "$START_TIMEOUT"; then
        if kill -0 "$pid" 2>/dev/null; then
            warn "$p did not answer 200 on $url within ${START_TIMEOUT}s under valgrind; see $OUT/$p.stderr"
        else
            warn "$p exited under valgrind before answering; see $OUT/$p.stderr"
        fi
        # the proxy's own messages, without valgrind's (==PID== lines)
        grep -v '^==[0-9]*==' "$OUT/$p.stderr" | tail -n 5 >&2 || true
        stop_pid "$pid"
        return 1
    fi
    log "$p: up (pid $pid); warming up with $WARMUP_REQUESTS requests"
    if ! load "$url" "$WARMUP_REQUESTS" "$OUT/$p.warmup.txt"; then
        warn "$p: warm-up requests failed; see $OUT/$p.warmup.txt"
        stop_pid "$pid"
        return 1
    fi
    if ! cg_control -z "$pid" "$OUT/$p.callgrind_control.txt"; then
        warn "$p: callgrind_control -z $pid failed; see $OUT/$p.callgrind_control.txt"
        stop_pid "$pid"
        return 1
    fi
    log "$p: measuring $REQUESTS requests"
    if ! load "$url" "$REQUESTS" "$OUT/$p.h2load.txt"; then
        warn "$p: not all $REQUESTS requests succeeded:"
        grep -E '^(requests|status codes):' "$OUT/$p.h2load.txt" >&2 || tail -n 5 "$OUT/$p.h2load.txt" >&2
        stop_pid "$pid"
        return 1
    fi
    if ! cg_control -d "$pid" "$OUT/$p.callgrind_control.txt"; then
        warn "$p: callgrind_control -d $pid failed; see $OUT/$p.callgrind_control.txt"
        stop_pid "$pid"
        return 1
    fi
    stop_pid "$pid"
    # callgrind_control -d wrote part 1; the file without a suffix is the rest (start, warm-up, stop)
    dump="$OUT/callgrind.$p.$pid.1"
    [[ -s "$dump" ]] || { warn "$p: no dump at $dump"; return 1; }
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    [[ "$ir" =~ ^[0-9]+$ ]] || { warn "$p: no PROGRAM TOTALS in callgrind_annotate $dump"; return 1; }
    IR[$p]=$ir
    PER[$p]=$(awk -v i="$ir" -v n="$REQUESTS" 'BEGIN { printf "%.0f", i / n }')
    LINES[$p]=-
    if [[ "$CACHE" == tiny ]]; then
        # PROGRAM TOTALS: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw, each followed by its (percent)
        LINES[$p]=$(callgrind_annotate "$dump" 2>/dev/null |
            awk -v n="$REQUESTS" '/PROGRAM TOTALS/ { gsub(",", ""); printf "%.0f", ($13 + $15 + $17) / n; exit }')
        [[ "${LINES[$p]}" =~ ^[0-9]+$ ]] || { warn "$p: no cache counts in $dump"; return 1; }
    fi
    FILE[$p]=$dump
    MEASURED+=("$p")
    log "$p: ${PER[$p]} Ir/request ($ir Ir over $REQUESTS requests)"
}

for p in $PROXIES; do
    if ! measure "$p"; then
        # HAProxy and the floors are references only: a failure there is reported, not fatal
        [[ $p == haproxy || $p == floor || $p == inline || $p == maps || $p == raw ]] || die "could not measure $p (outputs in $OUT)"
        warn "skipping $p"
        SKIPPED+=("$p")
    fi
done

# ------------------------------------------------------------------ table --
((${#MEASURED[@]})) || die "nothing measured"
printf 'proxy\trequests\tir_total\tir_per_request\tratio_to_nginx\tlines_per_request\tcallgrind_file\n' >"$OUT/instructions.tsv"
for p in "${MEASURED[@]}"; do
    ratio=-
    [[ -n "${PER[nginx]:-}" ]] && ratio=$(awk -v a="${IR[$p]}" -v b="${IR[nginx]}" 'BEGIN { printf "%.2f", a / b }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$REQUESTS" "${IR[$p]}" "${PER[$p]}" "$ratio" "${LINES[$p]}" "${FILE[$p]}" >>"$OUT/instructions.tsv"
done

echo
awk -F'\t' 'NR == 1 { printf "%-8s  %12s  %14s  %13s\n", "proxy", "Ir/request", "ratio to nginx", "lines/request"; next }
            { printf "%-8s  %12s  %14s  %13s\n", $1, $4, $5, $6 }' "$OUT/instructions.tsv"
for p in "${SKIPPED[@]}"; do printf '%-8s  %12s  %14s  %13s\n' "$p" skipped - -; done
echo
cat "$OUT/meta.txt"
log "table in $OUT/instructions.tsv; callgrind files in $OUT"
log "where the instructions go (the .1 file is the measured part):"
log "  callgrind_annotate --inclusive=yes ${FILE[${MEASURED[-1]}]} | head -60   # inclusive"
log "  callgrind_annotate --threshold=100 ${FILE[${MEASURED[-1]}]} | head -60   # self; the first rows"
log "  at 100 % are the functions that were on the stack when the dump was taken (main, ...)"
