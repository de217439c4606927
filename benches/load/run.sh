#!/usr/bin/env bash
# Comparison load benchmark: direct vs nginx vs HAProxy vs cutover, the
# plain `cargo build --release` and the PGO build side by side.
#
# Each proxy runs with one worker pinned to core 0 (PROXY_CPU); the load
# generator (one thread) and the fixed backend (one nginx worker returning a
# 13-byte body, or 16 KiB on /16k) are pinned to core 1 (LOAD_CPU). HTTP/1.1
# keep-alive to the upstream, logs off. ROUNDS interleaved rounds: in each
# round, every case runs against direct, nginx, haproxy, cutover (plain build)
# and cutover-pgo (PGO build) in turn,
# in slices of SLICE_SECONDS: slice 1 against each proxy, then slice 2, and
# so on, the order rotated each slice, so that a change in the machine's
# speed within a round falls on every proxy alike.
#
# Fairness checks printed with the results: the upstream connections each
# proxy opened during each case (the backend nginx's stub_status `accepts`,
# read around every slice), and the request head each proxy sent the backend
# (one request through each, HTTP/1.1 and h2c, against a header echo, before
# the real backend starts).
#
# After the rounds, the memory cases (MEM_CASES; examples/conn_hold.rs is the
# client): idle10k opens MEM_CONNS HTTP/1.1 keep-alive connections to each
# proxy, each sends one request and then stays open: RSS before and after,
# KiB per connection; idle10k-h2 the same over h2c (one stream each). rate10k: MEM_CONNS connections each sending one request
# a second for MEM_SECONDS: RSS, and CPU per request at scale. The cases share
# each proxy's process, in this order: a case reuses memory the one before it
# freed, so for what one connection costs on a fresh proxy, run its case
# alone (ROUNDS=0 CASES= MEM_CASES=idle10k-h2).
#
# Usage (from anywhere; needs root for apt-get, or the tools already there):
#   benches/load/run.sh                      # 3 rounds x 10 s, ~20 minutes (plus the PGO build, 7-15 min)
#   DURATION=2 ROUNDS=1 benches/load/run.sh  # smoke run, ~5 minutes (plus the builds)
#   PGO=0 benches/load/run.sh                # without the PGO build (saves its 7-15 min)
#   ROUNDS=0 PROFILE=1 benches/load/run.sh   # only the perf tables, ~3 minutes
# Results: docs/performance.md explains the method and every column.
#
# Environment:
#   DURATION=10        measured seconds per case, proxy and round
#   SLICE_SECONDS=2    ... taken in slices this long (the last one may be shorter); 0 = one piece
#   ROUNDS=3           interleaved rounds
#   WARMUP=1           seconds of unmeasured load before a proxy's first slice of each case (0 = none)
#   RATE=5000          requests/s of the fixed-rate case
#   CASES="h1-c50 h1-c200 h1-16k h2c rate"   subset of cases to run
#   PROXIES="direct nginx haproxy cutover cutover-pgo"  subset of proxies (cutover = plain build,
#                      cutover-pgo = PGO build; PGO=0 leaves cutover-pgo out of the default)
#   ACCESS_LOG=json    cutover (both builds) logs every request to an access log in the temp
#                      dir, in "json" or "text": run once with and once without to see its cost
#   MEM_CASES="idle10k idle10k-h2 rate10k"  memory cases after the rounds ("" = none)
#   MEM_CONNS=10000    connections of the memory cases: needs a hard `ulimit -n` of MEM_CONNS + 1200
#                      (the client and each proxy hold that many); above 10,000, raise nginx's
#                      worker_connections and HAProxy's maxconn too
#   MEM_HOLD=5         seconds idle10k holds its connections open after RSS is read
#   MEM_SECONDS=10     measured seconds of rate10k
#   PROXY_CPU=0 LOAD_CPU=1                   cores for the proxy and for backend + load generator
#   BASE_PORT=18000    ports BASE_PORT..BASE_PORT+29 on 127.0.0.1 are used
#   QUIET_BUSY_MAX=15  machine-wide busy % (over 1 s) below which a run may start
#   QUIET_WAIT=120     longest wait (s) for the machine to get that quiet; then warn and go on
#   SKIP_INSTALL=1     do not apt-get anything (fail if a tool is missing)
#   SKIP_OHA=1         do not `cargo install oha`; the fixed-rate case then uses h2load --h1 --rps
#   OHA_INSTALL_TIMEOUT=600  give up on `cargo install oha` after this many seconds (then h2load)
#   OHA_TARGET_DIR=...       build dir of that install (kept, so a second try resumes)
#   RATE_TOOL=oha|h2load   force the fixed-rate tool
#   PGO=0              skip the PGO build (scripts/pgo-build.sh, 7-15 min): measure the plain build only
#   PGO_BIN=/path      use this binary as cutover-pgo (no PGO build)
#   SKIP_BUILD=1       use the existing binaries (target/release/cutover, target/pgo/cutover,
#                      target/release/examples/conn_hold)
#   PROFILE=1          after the rounds, for each proxy under the h1-c50 load and at the fixed rate:
#                      syscalls, context switches and page faults per request, and the kernel/libc/
#                      own-code split of its CPU (perf trace -s, perf stat, perf record); then a 5 s
#                      perf profile of cutover with call graphs under the h1-c50 load
#   OUT=/path          where raw outputs and the tables go (default /tmp/cutover-load-<utc time>)
#   KEEP_TMP=1         keep the rendered configs (the temp dir) after the run
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

DURATION="${DURATION:-10}"
SLICE_SECONDS="${SLICE_SECONDS:-2}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-1}"
RATE="${RATE:-5000}"
CASES="${CASES:-h1-c50 h1-c200 h1-16k h2c rate}"
if [[ "${PGO:-1}" == 1 ]]; then PROXIES="${PROXIES:-direct nginx haproxy cutover cutover-pgo}"
else PROXIES="${PROXIES:-direct nginx haproxy cutover}"; fi
MEM_CASES="${MEM_CASES-idle10k idle10k-h2 rate10k}"
MEM_CONNS="${MEM_CONNS:-10000}"
MEM_HOLD="${MEM_HOLD:-5}"
MEM_SECONDS="${MEM_SECONDS:-10}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18000}"
QUIET_BUSY_MAX="${QUIET_BUSY_MAX:-15}"
QUIET_WAIT="${QUIET_WAIT:-120}"
OHA_INSTALL_TIMEOUT="${OHA_INSTALL_TIMEOUT:-600}"
OHA_TARGET_DIR="${OHA_TARGET_DIR:-$HOME/.cache/cutover-load/oha-target}"
OUT="${OUT:-/tmp/cutover-load-$(date -u +%Y%m%dT%H%M%SZ)}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"

# ---------------------------------------------------------------- install --
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v pgrep >/dev/null || need_apt+=(procps)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
# the PGO build lays out the code with callgrind, as the image's build does
if [[ " $PROXIES " == *" cutover-pgo "* && -z "${SKIP_BUILD:-}${PGO_BIN:-}" ]] && ! command -v valgrind >/dev/null; then need_apt+=(valgrind); fi
if [[ "${PROFILE:-}" == 1 ]] && ! command -v perf >/dev/null; then need_apt+=(linux-perf); fi
install_missing "${need_apt[@]}"

if [[ -z "${RATE_TOOL:-}" ]]; then
    if [[ -x "$(oha_path)" ]]; then
        RATE_TOOL=oha
    elif [[ -z "${SKIP_OHA:-}" && -z "${SKIP_INSTALL:-}" ]]; then
        # bounded: on a busy 2-core machine this build can take longer than
        # the whole benchmark. The target dir persists, so a retry resumes.
        log "installing oha (cargo install --locked oha, at most ${OHA_INSTALL_TIMEOUT}s)"
        if timeout "$OHA_INSTALL_TIMEOUT" cargo install --locked --target-dir "$OHA_TARGET_DIR" oha >&2; then
            RATE_TOOL=oha
        else
            warn "cargo install oha failed or took over ${OHA_INSTALL_TIMEOUT}s; the fixed-rate case uses h2load --h1 --rps"
            RATE_TOOL=h2load
        fi
    else
        RATE_TOOL=h2load
    fi
fi
OHA="$(oha_path)"
log "fixed-rate tool: $RATE_TOOL"

# ------------------------------------------------------------------ build --
declare -A BIN
BUILDS=()
if [[ " $PROXIES " == *" cutover "* ]]; then BIN[cutover]="$(build_cutover_plain)"; BUILDS+=("cutover: plain (cargo build --release)"); fi
if [[ " $PROXIES " == *" cutover-pgo "* ]]; then
    BIN[cutover-pgo]="$(build_cutover_pgo)"
    BUILDS+=("cutover-pgo: ${PGO_BIN:+$PGO_BIN, given as }PGO (scripts/pgo-build.sh)")
fi
for p in "${!BIN[@]}"; do [[ -x "${BIN[$p]}" ]] || die "no binary for $p"; done
if [[ -n "$MEM_CASES" ]]; then
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building the memory cases' client (cargo build --release --locked --example conn_hold)"
        (cd "$REPO" && cargo build --release --locked --example conn_hold >&2)
    fi
    CONN_HOLD="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/conn_hold"
    [[ -x "$CONN_HOLD" ]] || die "no conn_hold binary at $CONN_HOLD"
fi

# --------------------------------------------------------------- configs --
(( $(nproc) >= 2 )) || die "needs 2 cores (found $(nproc))"
prepare_tmp cutover-load
# private copies: a concurrent `cargo build` may replace the originals mid-run
for p in "${!BIN[@]}"; do
    cp "${BIN[$p]}" "$TMP/$p"
    BIN[$p]="$TMP/$p"
    "${BIN[$p]}" check "$TMP/$p.toml" >/dev/null
done
[[ -z "$MEM_CASES" ]] || { cp "$CONN_HOLD" "$TMP/conn_hold"; CONN_HOLD="$TMP/conn_hold"; }
# prepare_tmp raised the soft limit to the hard one
fds="$(ulimit -n)"
if [[ -n "$MEM_CASES" && "$fds" != unlimited ]] && ((fds < MEM_CONNS + 1200)); then
    die "ulimit -n is $fds: the memory cases need MEM_CONNS + 1200 = $((MEM_CONNS + 1200)) (raise the hard limit, or lower MEM_CONNS)"
fi
# runs a load tool, then writes the CPU ticks it used (children's utime+stime) to $TICKS_FILE
cat >"$TMP/cputime.sh" <<'SH'
#!/bin/sh
"$@"
rc=$?
awk '{ sub(/^.*\) /, ""); print $14 + $15 }' /proc/$$/stat >"$TICKS_FILE"
exit $rc
SH
chmod +x "$TMP/cputime.sh"
export TICKS_FILE="$TMP/loadgen.ticks"

check_ports_free

# ---------------------------------------------------------------- helpers --
CLK_TCK="$(getconf CLK_TCK)"

# pid and its direct children (nginx: master + worker)
proc_tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

# utime+stime in clock ticks, summed over the process tree (threads included)
cpu_ticks() {
    local total=0 p t
    for p in $(proc_tree "$1"); do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# CPU time in ns summed over the process tree's threads, from schedstat:
# exact, where utime+stime are counted in 10 ms ticks (a 2 s slice at the
# fixed rate uses only about 25 of them). A thread that exits mid-slice takes
# its time with it; the proxies under test keep theirs.
cpu_ns() {
    local total=0 p f t
    for p in $(proc_tree "$1"); do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r t _ <"$f" 2>/dev/null || t=0
            total=$((total + t))
        done
    done
    echo "$total"
}
if [[ -r /proc/self/schedstat ]]; then
    proxy_cpu_ns() { cpu_ns "$1"; }
else # a kernel without schedstats: ticks, in ns
    proxy_cpu_ns() { echo $(($(cpu_ticks "$1") * 1000000000 / CLK_TCK)); }
fi

rss_kb() {
    local total=0 p r
    for p in $(proc_tree "$1"); do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# machine-wide busy % over one second, from /proc/stat
busy_1s() {
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[1] - x[1]; i = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# busy clock ticks of the whole machine so far (user nice system irq softirq steal)
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# wait for a quiet machine; sets BUSY to the last reading
wait_quiet() {
    local waited=0
    while :; do
        BUSY=$(busy_1s)
        ((BUSY <= QUIET_BUSY_MAX)) && return 0
        if ((waited >= QUIET_WAIT)); then
            warn "machine still ${BUSY}% busy after ${QUIET_WAIT}s; measuring anyway"
            return 0
        fi
        waited=$((waited + 1))
    done
}

parked_of() { # proxy: the idle client connections cutover has parked now (its metrics), - for other proxies
    local port
    case "$1" in
        cutover) port=$CUTOVER_ADMIN ;;
        cutover-pgo) port=$CUTOVER_PGO_ADMIN ;;
        *) echo -; return ;;
    esac
    curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null | awk '$1 == "cutover_client_connections_parked" { print $2; found = 1 } END { if (!found) print "-" }'
}

check_body() { # url bytes [curl args...]
    local url=$1 want=$2 got; shift 2
    got=$(curl -s "$@" "$url" | wc -c)
    [[ "$got" == "$want" ]] || die "$url returned $got bytes, expected $want"
}

# connections the backend nginx has accepted so far (its stub_status), the
# one this reading opens included
backend_accepts() {
    local n
    n=$(curl -s --max-time 5 "http://127.0.0.1:$BACKEND_STATUS/" | awk 'NR == 3 { print $1 }')
    [[ "$n" =~ ^[0-9]+$ ]] || { warn "could not read the backend's stub_status"; echo -1; return; }
    echo "$n"
}

# connections opened between two backend_accepts readings (less the second
# reading's own): "-" if either failed
opened_between() { if (($1 < 0 || $2 < 0)); then echo -; else echo $(($2 - $1 - 1)); fi; }

start() { # name cpu cmd...: start a pinned background process
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# ------------------------------------------------------------------ start --
log "results in $OUT; configs in $TMP"
cp "$TMP"/backend-nginx.conf "$TMP"/proxy-nginx.conf "$TMP"/haproxy.cfg "$TMP"/cutover.toml "$TMP"/cutover-pgo.toml "$OUT/"
read -r -a proxies <<<"$PROXIES"
declare -A URL URL_H2 PID
URL[direct]="http://127.0.0.1:$BACKEND"; URL_H2[direct]="http://127.0.0.1:$BACKEND_H2"; PID[direct]=""
URL[nginx]="http://127.0.0.1:$NGINX"; URL_H2[nginx]="http://127.0.0.1:$NGINX_H2"
URL[haproxy]="http://127.0.0.1:$HAPROXY"; URL_H2[haproxy]="http://127.0.0.1:$HAPROXY_H2"
URL[cutover]="http://127.0.0.1:$CUTOVER"; URL_H2[cutover]="http://127.0.0.1:$CUTOVER"
URL[cutover-pgo]="http://127.0.0.1:$CUTOVER_PGO"; URL_H2[cutover-pgo]="http://127.0.0.1:$CUTOVER_PGO"
for p in "${proxies[@]}"; do [[ -n "${URL[$p]:-}" ]] || die "unknown proxy $p (PROXIES)"; done

# First a header echo on the backend's port: one request through each proxy,
# HTTP/1.1 and h2c, and what the backend saw of it, so that the forwarding
# headers can be compared (summarize.py prints them side by side).
start echo "$LOAD_CPU" python3 "$HERE/echo_headers.py" "$BACKEND"
wait_http "http://127.0.0.1:$BACKEND/"
for p in "${proxies[@]}"; do
    case $p in
        direct) ;;
        nginx) start nginx "$PROXY_CPU" nginx -c "$TMP/proxy-nginx.conf" -p "$TMP" ;;
        haproxy) start haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" ;;
        cutover*) start "$p" "$PROXY_CPU" env RUST_LOG=warn "${BIN[$p]}" run --config "$TMP/$p.toml" ;;
    esac
    [[ $p == direct ]] || PID[$p]=$(eval echo "\$PID_${p//-/_}")
done
: >"$OUT/headers.txt"
for p in "${proxies[@]}"; do
    [[ $p == direct ]] && continue
    wait_http "${URL[$p]}/"
    { echo "== $p http/1.1"; curl -s "${URL[$p]}/headers?x=1"; echo "== $p h2c"; curl -s --http2-prior-knowledge "${URL_H2[$p]}/headers?x=1"; } |
        tr -d '\r' | grep -v '^$' >>"$OUT/headers.txt"
done
kill "$PID_echo"; wait "$PID_echo" 2>/dev/null || true; forget_pid "$PID_echo"

start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"
wait_http "http://127.0.0.1:$BACKEND/"
wait_http "http://127.0.0.1:$BACKEND_STATUS/"

for p in "${proxies[@]}"; do
    wait_http "${URL[$p]}/"
    check_body "${URL[$p]}/" 13
    check_body "${URL[$p]}/16k" 16384
    wait_http "${URL_H2[$p]}/" --http2-prior-knowledge
    check_body "${URL_H2[$p]}/" 13 --http2-prior-knowledge
done
sleep 1

# idle RSS: after start (and the few sanity requests above), before any load
printf 'proxy\tprocs\tidle_kb\tafter_kb\n' >"$OUT/rss.tsv.idle"
for p in "${proxies[@]}"; do
    [[ $p == direct ]] && continue
    printf '%s\t%s\t%s\n' "$p" "$(proc_tree "${PID[$p]}" | wc -l)" "$(rss_kb "${PID[$p]}")" >>"$OUT/rss.tsv.idle"
done

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), kernel $(uname -r)"
    echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR==1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR==1 { print $1, $2 }'), $(h2load --version | head -1)$([[ $RATE_TOOL == oha ]] && echo ", $("$OHA" --version)"), cutover $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
    echo "cutover builds: $(IFS=';'; echo "${BUILDS[*]:-none}")"
    echo "settings: DURATION=$DURATION SLICE_SECONDS=$SLICE_SECONDS ROUNDS=$ROUNDS WARMUP=$WARMUP RATE=$RATE RATE_TOOL=$RATE_TOOL PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU MEM_CASES=\"$MEM_CASES\" MEM_CONNS=$MEM_CONNS"
} | tee "$OUT/meta.txt" >&2

# ------------------------------------------------------------ load tools --
to_ms() { # wrk latency like 305.00us / 1.20ms / 2.01s -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# percentile (ms) of column 3 (µs) of an h2load log file
log_pct() {
    cut -f3 "$1" | sort -n | awk -v p="$2" '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.3f", a[i] / 1000 }'
}

# Each run_* prints: requests rps p50_ms p99_ms errors
run_wrk() { # conns url duration outfile
    "$TMP/cputime.sh" timeout $(($3 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$1" -d"$3"s --latency "$2" >"$4" 2>&1 || true
    local req rps p50 p99 sock non2xx
    req=$(awk '/requests in/ { print $1 }' "$4")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$4")
    p50=$(awk '$1 == "50%" { print $2 }' "$4")
    p99=$(awk '$1 == "99%" { print $2 }' "$4")
    sock=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$4")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$4")
    [[ -n "$req" && -n "$rps" ]] || { warn "could not parse $4"; echo "0 - - - 1"; return; }
    echo "$req $rps $(to_ms "$p50") $(to_ms "$p99") $(( ${sock:-0} + ${non2xx:-0} ))"
}

run_h2load() { # url duration outfile [extra h2load args...]
    local url=$1 dur=$2 outf=$3; shift 3
    "$TMP/cputime.sh" timeout $((dur + 30)) taskset -c "$LOAD_CPU" h2load -t1 -D "$dur" --log-file="$outf.log" "$@" "$url" >"$outf" 2>&1 || true
    local ok rps p50 p99 errs
    ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' "$outf")
    rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$outf")
    errs=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) e += $i }
                /^status codes:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^[345]xx/) e += $i }
                END { print e + 0 }' "$outf")
    [[ -n "$ok" && -n "$rps" ]] || { warn "could not parse $outf"; echo "0 - - - 1"; return; }
    p50=$(log_pct "$outf.log" 50)
    p99=$(log_pct "$outf.log" 99)
    rm -f "$outf.log"
    echo "$ok $rps $p50 $p99 $errs"
}

run_oha() { # url duration outfile
    oha_at_rate "$1" "$2" "$3" "$TMP/cputime.sh"
    oha_summary "$3"
}

case_note() {
    case $1 in
        rate) if [[ $RATE_TOOL == oha ]]; then echo "${RATE} req/s, oha -c50"; else echo "${RATE} req/s, h2load --h1 -c50 --rps"; fi ;;
        *) echo "" ;;
    esac
}

measure() { # round case proxy slice seconds: one measured slice
    local rnd=$1 cs=$2 p=$3 slice=$4 secs=$5 url h2 outf res t0 t1 w0 w1 a0 a1 opened
    url=${URL[$p]}; h2=${URL_H2[$p]}
    outf="$OUT/r$rnd-$cs-$p-s$slice.txt"
    if ((WARMUP > 0 && slice == 1)); then
        case $cs in
            h1-c50|rate) run_wrk 50 "$url/" "$WARMUP" "$outf.warmup" >/dev/null ;;
            h1-c200) run_wrk 200 "$url/" "$WARMUP" "$outf.warmup" >/dev/null ;;
            h1-16k) run_wrk 50 "$url/16k" "$WARMUP" "$outf.warmup" >/dev/null ;;
            h2c) run_h2load "$h2/" "$WARMUP" "$outf.warmup" -c50 -m10 >/dev/null ;;
        esac
        sleep 0.5
    fi
    a0=$(backend_accepts)
    if [[ -n "${PID[$p]}" ]]; then t0=$(proxy_cpu_ns "${PID[$p]}"); fi
    b0=$(cpu_ticks "$PID_backend")
    m0=$(machine_ticks)
    echo 0 >"$TICKS_FILE"
    w0=$(date +%s.%N)
    case $cs in
        h1-c50) res=$(run_wrk 50 "$url/" "$secs" "$outf") ;;
        h1-c200) res=$(run_wrk 200 "$url/" "$secs" "$outf") ;;
        h1-16k) res=$(run_wrk 50 "$url/16k" "$secs" "$outf") ;;
        h2c) res=$(run_h2load "$h2/" "$secs" "$outf" -c50 -m10) ;;
        rate)
            if [[ $RATE_TOOL == oha ]]; then res=$(run_oha "$url/" "$secs" "$outf")
            else res=$(run_h2load "$url/" "$secs" "$outf" --h1 -c50 --rps=$(( (RATE + 49) / 50 ))); fi ;;
        *) die "unknown case $cs" ;;
    esac
    w1=$(date +%s.%N)
    m1=$(machine_ticks)
    b1=$(cpu_ticks "$PID_backend")
    a1=$(backend_accepts)
    local req rps p50 p99 errs cpu_us="-" cpu_pct="-" other_pct lg_ticks proxy_ticks=0
    lg_ticks=$(cat "$TICKS_FILE")
    read -r req rps p50 p99 errs <<<"$res"
    if [[ -n "${PID[$p]}" ]]; then
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p (pid ${PID[$p]}) died during $cs; see $OUT/$p.stderr"
        t1=$(proxy_cpu_ns "${PID[$p]}")
        proxy_ticks=$(((t1 - t0) * CLK_TCK / 1000000000))
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        cpu_pct=$(awk -v d=$((t1 - t0)) -v a="$w0" -v b="$w1" 'BEGIN { printf "%.0f", 100 * d / 1e9 / (b - a) }')
    fi
    # CPU used by anything but the proxy, the backend and the load tool, in %
    # of the whole machine (other work, steal; tick-based, so a few % of noise)
    other_pct=$(awk -v m=$((m1 - m0 - proxy_ticks - (b1 - b0) - lg_ticks)) -v hz="$CLK_TCK" -v n="$(nproc)" \
        -v a="$w0" -v b="$w1" 'BEGIN { v = 100 * m / hz / n / (b - a); printf "%.0f", (v < 0 ? 0 : v) }')
    opened=$(opened_between "$a0" "$a1")
    ((errs == 0)) || warn "$p $cs: $errs errors (see $outf)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "$cs" "$p" "$slice" "$rps" "$p50" "$p99" "$req" \
        "$errs" "$cpu_us" "$cpu_pct" "$BUSY" "$other_pct" "$opened" "$(case_note "$cs")" >>"$OUT/results.tsv"
    log "r$rnd $cs $p s$slice: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} CPU-µs/req, CPU ${cpu_pct}%, errors $errs, upstream conns opened $opened (machine busy before ${BUSY}%, other load during ${other_pct}%)"
}

# ------------------------------------------------------------------- runs --
# The slices of one case: their lengths, SLICE_SECONDS each and the rest last.
slice_lengths=()
if ((SLICE_SECONDS > 0 && SLICE_SECONDS < DURATION)); then
    for ((left = DURATION; left > 0; left -= SLICE_SECONDS)); do
        slice_lengths+=($((left < SLICE_SECONDS ? left : SLICE_SECONDS)))
    done
else
    slice_lengths=("$DURATION")
fi
printf 'round\tcase\tproxy\tslice\trps\tp50_ms\tp99_ms\trequests\terrors\tcpu_us_per_req\tcpu_pct\tbusy_pct\tother_pct\tupstream_opened\tnote\n' >"$OUT/results.tsv"
for rnd in $(seq "$ROUNDS"); do
    for cs in $CASES; do
        for ((i = 0; i < ${#slice_lengths[@]}; i++)); do
            wait_quiet
            # rotated: no proxy always runs first, or always right after another
            for ((k = 0; k < ${#proxies[@]}; k++)); do
                measure "$rnd" "$cs" "${proxies[(i + k) % ${#proxies[@]}]}" $((i + 1)) "${slice_lengths[i]}"
            done
        done
    done
done

printf 'proxy\tprocs\tidle_kb\tafter_kb\n' >"$OUT/rss.tsv"
tail -n +2 "$OUT/rss.tsv.idle" | while IFS=$'\t' read -r p procs idle; do
    printf '%s\t%s\t%s\t%s\n' "$p" "$procs" "$idle" "$(rss_kb "${PID[$p]}")" >>"$OUT/rss.tsv"
done
rm -f "$OUT/rss.tsv.idle"

# ---------------------------------------------------------- memory cases --
# One proxy at a time (not sliced: a case is one long state, not a rate).
# idle10k: RSS before the client starts and once every connection has had
# its answer and sat idle for 2 s; the client then holds them MEM_HOLD s more
# and closes them. rate10k: MEM_CONNS connections each sending one request a
# second; CPU and requests counted over the client's measured MEM_SECONDS,
# RSS at the end of them.
wait_line() { # file pattern seconds pid: wait until a line of file matches, or the pid exits
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$4" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null; return; }
        sleep 0.05
    done
    return 1
}
field() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k { v = $2 } END { print v }'; } # last key=value in a file

if [[ -n "$MEM_CASES" ]]; then
    printf 'case\tproxy\tconns\tanswered\terrors\trss_before_kb\trss_after_kb\tkib_per_conn\trequests\texpected\tcpu_us_per_req\tcpu_pct\tupstream_opened\n' >"$OUT/mem.tsv"
fi
for cs in $MEM_CASES; do
    for p in "${proxies[@]}"; do
        [[ $p == direct ]] && continue
        f="$OUT/mem-$cs-$p.txt"
        wait_quiet
        r0=$(rss_kb "${PID[$p]}")
        a0=$(backend_accepts)
        addr="${URL[$p]#http://}"
        case $cs in
            idle10k) args=(--mode idle --hold "$((MEM_HOLD + 2))") ;;
            idle10k-h2) args=(--mode idle-h2 --hold "$((MEM_HOLD + 2))"); addr="${URL_H2[$p]#http://}" ;;
            rate10k) args=(--mode rate --seconds "$MEM_SECONDS") ;;
            *) die "unknown memory case $cs (MEM_CASES)" ;;
        esac
        log "$cs $p: $MEM_CONNS connections"
        taskset -c "$LOAD_CPU" "$CONN_HOLD" --addr "$addr" --conns "$MEM_CONNS" "${args[@]}" >"$f" 2>&1 &
        client=$!
        PIDS+=("$client")
        wait_line "$f" '^ready' 180 "$client" || warn "$cs $p: the client was not ready (see $f)"
        t0=$(proxy_cpu_ns "${PID[$p]}"); w0=$(date +%s.%N)
        if [[ $cs == idle10k* ]]; then
            sleep 2
            r1=$(rss_kb "${PID[$p]}")
            parked=$(parked_of "$p")
        else
            parked=-
            wait_line "$f" '^measured' $((MEM_SECONDS + 60)) "$client" || warn "$cs $p: no measurement (see $f)"
            r1=$(rss_kb "${PID[$p]}")
        fi
        t1=$(proxy_cpu_ns "${PID[$p]}"); w1=$(date +%s.%N)
        wait "$client" || warn "$cs $p: the client failed (see $f)"
        forget_pid "$client"
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p (pid ${PID[$p]}) died during $cs; see $OUT/$p.stderr"
        a1=$(backend_accepts)
        answered=$(field "$f" answered); errs=$(field "$f" errors); req=$(field "$f" requests)
        per_conn=$(awk -v a="$r0" -v b="$r1" -v n="${answered:-0}" 'BEGIN { printf "%.2f", (n > 0 ? (b - a) / n : 0) }')
        cpu_us=-; cpu_pct=-; expected=-
        if [[ $cs == rate10k ]]; then
            expected=$((MEM_CONNS * MEM_SECONDS))
            cpu_us=$(awk -v d=$((t1 - t0)) -v n="${req:-0}" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
            cpu_pct=$(awk -v d=$((t1 - t0)) -v a="$w0" -v b="$w1" 'BEGIN { printf "%.0f", 100 * d / 1e9 / (b - a) }')
        fi
        opened=$(opened_between "$a0" "$a1")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cs" "$p" "$MEM_CONNS" "${answered:-0}" "${errs:-?}" \
            "$r0" "$r1" "$per_conn" "${req:--}" "$expected" "$cpu_us" "$cpu_pct" "$opened" >>"$OUT/mem.tsv"
        log "$cs $p: ${answered:-0} answered, errors ${errs:-?}, RSS $r0 -> $r1 KiB ($per_conn KiB/conn), parked ${parked:--}, ${req:--} requests measured of $expected, $cpu_us CPU-µs/req, upstream conns opened $opened"
        # the proxies close their side of the connections as the client's closes arrive
        sleep 1
    done
done

# one pinned load run (an executable, so perf can run it):
#   load.sh URL c50|rate SECONDS OUTFILE   c50 = wrk -c50; rate = h2load --h1 at RATE
cat >"$TMP/load.sh" <<SH
#!/bin/sh
case \$2 in
    c50) exec taskset -c $LOAD_CPU wrk -t1 -c50 -d"\$3"s "\$1/" >"\$4" 2>&1 ;;
    rate) exec taskset -c $LOAD_CPU h2load -t1 --h1 -c50 --rps=$(( (RATE + 49) / 50 )) -D "\$3" "\$1/" >"\$4" 2>&1 ;;
esac
SH
chmod +x "$TMP/load.sh"
load_requests() { # output file of load.sh
    awk '/requests in/ { print $1 } /^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' "$1"
}

if [[ "${PROFILE:-}" == 1 ]]; then
    # 1. per proxy and per load (c50 = the h1-c50 load, rate = the fixed rate):
    #    syscalls (by name), context switches and page faults per request
    #    (perf trace -s, perf stat), then the kernel / libc / own-code split of the proxy's CPU
    #    time (perf record, no call graph). Separate runs, because tracing
    #    slows the proxies down (unevenly): no CPU figure is taken from them.
    printf 'proxy\tload\trequests\tsyscalls\tctx_switches\tpage_faults\ttop_syscalls\tkernel_pct\tlibc_pct\n' >"$OUT/syscalls.tsv"
    for load in c50 rate; do
        for p in "${proxies[@]}"; do
            [[ $p == direct ]] && continue
            pids=$(proc_tree "${PID[$p]}" | paste -sd, -)
            f="$OUT/prof-$p-$load"
            wait_quiet
            timeout 40 perf stat -x, -o "$f.stat.csv" -e context-switches,page-faults -p "$pids" -- \
                timeout 40 perf trace -s -o "$f.trace.txt" -p "$pids" -- \
                "$TMP/load.sh" "${URL[$p]}" "$load" 5 "$f.trace-load.txt" || warn "perf trace/stat failed for $p $load"
            wait_quiet
            "$TMP/load.sh" "${URL[$p]}" "$load" 7 "$f.record-load.txt" &
            wrk_pid=$!
            PIDS+=("$wrk_pid")
            sleep 1
            perf record -e cpu-clock -F 999 -o "$f.perf.data" -p "$pids" -- sleep 5 >"$f.record.txt" 2>&1 ||
                warn "perf record failed for $p $load"
            wait "$wrk_pid" || true
            perf report -i "$f.perf.data" --stdio --sort dso >"$f.dso.txt" 2>/dev/null || true
            perf report -i "$f.perf.data" --stdio --sort dso,symbol --percent-limit 0.5 >"$f.flat.txt" 2>/dev/null || true
            n=$(load_requests "$f.trace-load.txt")
            read -r sys top < <(awk -v n="${n:-0}" '
                $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { c[$1] += $2; t += $2 }
                END { printf "%d ", t; k = 0
                      while (k < 5) { best = ""; for (s in c) if (best == "" || c[s] > c[best]) best = s
                                      if (best == "" || n == 0) break
                                      printf "%s%s %.2f", (k ? ", " : ""), best, c[best] / n; delete c[best]; k++ }
                      print "" }' "$f.trace.txt" 2>/dev/null || echo "0 -")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$load" "${n:-0}" "$sys" \
                "$(awk -F, '$3 ~ /context-switches/ { print $1 }' "$f.stat.csv" 2>/dev/null)" \
                "$(awk -F, '$3 ~ /page-faults/ { print $1 }' "$f.stat.csv" 2>/dev/null)" "${top:--}" \
                "$(awk '/\[kernel/ { sub(/%/, "", $1); k += $1 } END { print k + 0 }' "$f.dso.txt")" \
                "$(awk '/libc[.-]/ { sub(/%/, "", $1); k += $1 } END { print k + 0 }' "$f.dso.txt")" >>"$OUT/syscalls.tsv"
        done
    done
    # 2. where cutover's CPU goes under the h1-c50 load: 5 s of perf record,
    #    DWARF call graphs (the release build has no frame pointers)
    #    (the plain build when it ran: it is the one most users run)
    prof=cutover; [[ -n "${PID[cutover]:-}" ]] || prof=cutover-pgo
    [[ -n "${PID[$prof]:-}" ]] || die "PROFILE=1 needs cutover or cutover-pgo in PROXIES"
    log "profiling $prof under h1-c50 load (perf record, 5 s)"
    wait_quiet
    timeout 40 taskset -c "$LOAD_CPU" wrk -t1 -c50 -d12s "${URL[$prof]}/" >"$OUT/profile-wrk.txt" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    sleep 2
    if perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$OUT/perf.data" -p "${PID[$prof]}" -- sleep 5 \
        >"$OUT/perf-record.txt" 2>&1; then
        perf report -i "$OUT/perf.data" --stdio --no-children --sort dso -g none >"$OUT/perf-dso.txt" 2>/dev/null || true
        perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none --percent-limit 0.5 >"$OUT/perf-flat.txt" 2>/dev/null || true
        perf report -i "$OUT/perf.data" --stdio --children --sort symbol -g none --percent-limit 2 >"$OUT/perf-children.txt" 2>/dev/null || true
        perf report -i "$OUT/perf.data" --stdio --no-children --percent-limit 2 >"$OUT/perf-report.txt" 2>/dev/null || true
        log "profile in $OUT/perf-{dso,flat,children,report}.txt"
    else
        warn "perf record failed; see $OUT/perf-record.txt"
    fi
    wait "$wrk_pid" || true
fi

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/tables.md"
cat "$OUT/meta.txt"
log "raw outputs and tables in $OUT"
