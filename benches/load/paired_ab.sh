#!/usr/bin/env bash
# Paired A/B at a fixed rate: what B costs against A in CPU per request and
# latency, read so that a loaded machine's drift cancels out.
#
# Two cutover processes, A and B, run side by side on the proxy's CPU in
# front of the load benchmark's nginx backend; each has its own config and,
# optionally, its own binary (two configs of one build, or two builds of
# one config). The load tool (h2load --h1 -c50 --rps, which sends in bursts
# every 10 ms, see NOTES.md; or oha, see RATE_TOOL below) runs on the other
# CPU. In each round both take one slice of SLICE_SECONDS, in alternating
# order (the second of a pair
# tends to be the faster on a shared VM), and each process's CPU time is
# read from schedstat around its slice; both processes are started afresh
# every RESTART_EVERY rounds, on swapped ports and in swapped start order,
# since one process instance can be several percent slower than another of
# the same binary and config for its whole life. Printed: per slice
# CPU-µs per request, p50 and p99; for each of the three, per round the
# ratio B ÷ A and over all rounds the median ratio with its range and a
# seeded 95 % bootstrap interval of the geometric mean (paired.py); then a
# sanity line per side (requests served of those sent, errors, still running). A ratio
# whose interval holds 1 is within the noise of the run.
#
# Usage:
#   benches/load/paired_ab.sh [options] CONFIG_A CONFIG_B
# CONFIG_A, CONFIG_B: cutover config templates, or `-` for the load
# benchmark's (benches/load/cutover.toml: one worker, a 90/10 split with a
# guard). In a template (and in --append text) these are replaced:
#   @CUTOVER@ @CUTOVER_ADMIN@  this side's proxy and admin ports
#   @BACKEND@ @BACKEND_H2@     the nginx backend (h1, h2c)
#   @DIR@                      the run's temp dir (removed at exit)
#   @SIDE_DIR@                 a dir of this side's own in it (for log files)
#   @SIDE@                     a or b
# Options:
#   --bin-a PATH, --bin-b PATH   the binaries (default for both: CUTOVER_BIN,
#                                else $CARGO_TARGET_DIR/release/cutover); each
#                                is copied first, so a build may replace it
#   --name-a NAME, --name-b NAME labels in the output (default a, b)
#   --append-a TEXT, --append-b TEXT   TOML appended to that side's config
#   --hooks FILE   bash sourced before the proxies start, with this script's
#                  functions and variables (start, log, die, TMP, OUT,
#                  BASE_PORT, LOAD_CPU; PID[a], PID[b], ADMIN_a, ADMIN_b of
#                  the running pair); it may define, for each fresh pair,
#                  hook_started (proxies answering), hook_warmed (after the
#                  warm-up) and hook_stopping (before they stop, not for the
#                  last pair), and hook_done (after the rounds, the last
#                  pair still running; what it prints joins the sanity
#                  lines). SERVED[a], SERVED[b] hold the requests served
#   --rounds N --slice S --rate R --out DIR --restart-every N
#                  as the settings below
# Settings (environment; options win):
#   ROUNDS=8 SLICE_SECONDS=5 RATE=5000 PROXY_CPU=0 LOAD_CPU=1
#   RESTART_EVERY=2: both processes are started afresh every that many
#   rounds, on swapped ports and in swapped start order (0: never)
#   BASE_PORT=18400 OUT=/tmp/cutover-ab-<time>
#   LOAD_PROTO=h1: h2c sends the load over HTTP/2 (prior knowledge, one
#   stream at a time per connection) instead of HTTP/1.1
#   RATE_TOOL=h2load: oha sends the requests evenly spaced (oha -q RATE
#   -c50 --latency-correction, HTTP/1.1 only), as run.sh's fixed-rate case
#   does; each request then finds the proxy idle and its caches colder, so
#   CPU per request reads higher than under h2load's bursts. OHA names the
#   binary (default: oha on PATH, else ~/.cargo/bin/oha)
# Output in OUT: meta.txt, slices.tsv (one line per slice), sanity.txt,
# summary.txt (what is printed on stdout). Progress goes to stderr.
#
# Load runs on a shared machine go one at a time, e.g.
#   flock /work/wt/bench.lock benches/load/paired_ab.sh --bin-a old --bin-b new - -
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-8}"
SLICE_SECONDS="${SLICE_SECONDS:-5}"
RATE="${RATE:-5000}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18400}"
OUT="${OUT:-/tmp/cutover-ab-$(date -u +%Y%m%dT%H%M%SZ)}"
RESTART_EVERY="${RESTART_EVERY:-2}"
DEFAULT_BIN="${CUTOVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/cutover}"
declare -A BIN=([a]="$DEFAULT_BIN" [b]="$DEFAULT_BIN") NAME=([a]=a [b]=b) APPEND=([a]="" [b]="") CONF=()
HOOKS=""

usage() { sed -n '/^# Usage:/,/^# Load runs/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
positional=()
while (($#)); do
    case "$1" in
        --bin-a | --bin-b) (($# >= 2)) || usage; BIN[${1#--bin-}]="$2"; shift 2 ;;
        --name-a | --name-b) (($# >= 2)) || usage; NAME[${1#--name-}]="$2"; shift 2 ;;
        --append-a | --append-b) (($# >= 2)) || usage; APPEND[${1#--append-}]="$2"; shift 2 ;;
        --hooks) (($# >= 2)) || usage; HOOKS="$2"; shift 2 ;;
        --rounds) (($# >= 2)) || usage; ROUNDS="$2"; shift 2 ;;
        --slice) (($# >= 2)) || usage; SLICE_SECONDS="$2"; shift 2 ;;
        --rate) (($# >= 2)) || usage; RATE="$2"; shift 2 ;;
        --out) (($# >= 2)) || usage; OUT="$2"; shift 2 ;;
        --restart-every) (($# >= 2)) || usage; RESTART_EVERY="$2"; shift 2 ;;
        -h | --help) usage ;;
        -) positional+=("$1"); shift ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) positional+=("$1"); shift ;;
    esac
done
((${#positional[@]} == 2)) || usage
CONF=([a]="${positional[0]}" [b]="${positional[1]}")
[[ ${NAME[a]} != "${NAME[b]}" ]] || { echo "the two sides need different names" >&2; exit 2; }

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"
# shellcheck source=benches/load/fixed_rate.sh
source "$HERE/fixed_rate.sh"

for tool in nginx h2load taskset curl python3; do command -v "$tool" >/dev/null || die "needs $tool"; done
if [[ ${RATE_TOOL:-h2load} == oha ]]; then
    OHA="${OHA:-$(oha_path)}"
    [[ -x $OHA ]] || die "RATE_TOOL=oha needs oha (cargo install --locked oha)"
    [[ ${LOAD_PROTO:-h1} == h1 ]] || die "RATE_TOOL=oha sends HTTP/1.1 only"
    export OHA
elif [[ -n ${RATE_TOOL:-} && $RATE_TOOL != h2load ]]; then
    die "RATE_TOOL is h2load or oha, not $RATE_TOOL"
fi
for s in a b; do
    [[ -x "${BIN[$s]}" ]] || die "no cutover binary at ${BIN[$s]} (cargo build --release)"
    [[ ${CONF[$s]} == - || -r ${CONF[$s]} ]] || die "no config at ${CONF[$s]}"
done
[[ -z "$HOOKS" || -r "$HOOKS" ]] || die "no hooks file at $HOOKS"
prepare_tmp cutover-ab

# each side: a private copy of its binary, and its config rendered twice,
# on either port pair (`swap` 0: A on the first, 1: B on the first)
PAIRS=("$CUTOVER $CUTOVER_ADMIN" "$CUTOVER_PGO $CUTOVER_PGO_ADMIN")
for s in a b; do
    mkdir -p "$TMP/$s"
    cp "${BIN[$s]}" "$TMP/$s/cutover"
    src="${CONF[$s]}"
    [[ $src == - ]] && src="$HERE/cutover.toml"
    for swap in 0 1; do
        i=$swap
        [[ $s == b ]] && i=$((1 - swap))
        read -r port admin <<<"${PAIRS[$i]}"
        { cat "$src"; [[ -z ${APPEND[$s]} ]] || printf '\n%s\n' "${APPEND[$s]}"; } |
            sed -e "s|@SIDE_DIR@|$TMP/$s|g" -e "s|@DIR@|$TMP|g" -e "s|@SIDE@|$s|g" \
                -e "s|@BACKEND_H2@|$BACKEND_H2|g" -e "s|@BACKEND@|$BACKEND|g" \
                -e "s|@CUTOVER_ADMIN@|$admin|g" -e "s|@CUTOVER@|$port|g" >"$TMP/$s/cutover-$swap.toml"
        "$TMP/$s/cutover" check "$TMP/$s/cutover-$swap.toml" >/dev/null || die "side $s's config does not check: $TMP/$s/cutover-$swap.toml"
    done
done
check_ports_free

hook() { if declare -F "$1" >/dev/null; then "$1"; fi; }
if [[ -n "$HOOKS" ]]; then
    # shellcheck disable=SC1090
    source "$HOOKS"
fi

start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"

# One instance of each side, started fresh: in epoch `e` (from 0) the two
# swap port pairs and start order on odd epochs. A process's own luck
# (where its memory landed, which it started after) moves its CPU per
# request by several percent for its whole life, as much as many changes
# being measured; fresh pairs every RESTART_EVERY rounds spread that luck
# over both sides instead of handing it to one.
declare -A PID=() PORT=()
start_pair() { # epoch
    local swap=$(($1 % 2)) s order
    if ((swap)); then order=(b a); else order=(a b); fi
    for s in "${order[@]}"; do
        start "$s" "$PROXY_CPU" env RUST_LOG=warn "$TMP/$s/cutover" run --config "$TMP/$s/cutover-$swap.toml"
    done
    PID=([a]="$PID_a" [b]="$PID_b")
    read -r PORT[a] ADMIN_a <<<"${PAIRS[$swap]}"
    read -r PORT[b] ADMIN_b <<<"${PAIRS[$((1 - swap))]}"
    for s in a b; do wait_http "http://127.0.0.1:${PORT[$s]}/"; done
    hook hook_started
    # warm-up: pools filled, buffers grown, log files created
    for s in a b; do fixed_rate "http://127.0.0.1:${PORT[$s]}/" 2 "$OUT/warmup-$1-${NAME[$s]}.txt" >/dev/null; done
    hook hook_warmed
}
stop_pair() {
    hook hook_stopping
    local s
    for s in a b; do kill -TERM "${PID[$s]}" 2>/dev/null || true; done
    for s in a b; do
        wait "${PID[$s]}" 2>/dev/null || true
        forget_pid "${PID[$s]}"
    done
}

describe_bin() { # path: its size and modification time, so two builds can be told apart
    stat -c '%s bytes, built %y' "$1" | sed 's/\.[0-9]* / /'
}
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tree: cutover $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty')"
    for s in a b; do
        echo "${NAME[$s]} ($s): ${BIN[$s]} ($(describe_bin "${BIN[$s]}")), config ${CONF[$s]}$([[ -z ${APPEND[$s]} ]] || echo ' + appended text')"
    done
    if [[ ${RATE_TOOL:-h2load} == oha ]]; then
        load="$("$OHA" --version) -c50 --latency-correction"
    else
        load="$(h2load --version | head -1) $([[ ${LOAD_PROTO:-h1} == h2c ]] && echo h2c || echo --h1) -c50 --rps"
    fi
    echo "settings: ROUNDS=$ROUNDS SLICE_SECONDS=$SLICE_SECONDS RATE=$RATE RESTART_EVERY=$RESTART_EVERY PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU, $load"
} | tee "$OUT/meta.txt" >&2
for s in a b; do cp "$TMP/$s/cutover-0.toml" "$OUT/config-${NAME[$s]}.toml"; done

printf 'round\tproxy\trequests\tcpu_us_per_req\tp50_ms\tp99_ms\terrors\n' >"$OUT/slices.tsv"
declare -A SERVED=([a]=0 [b]=0) ERRORS=([a]=0 [b]=0)
epoch=0
start_pair "$epoch"
for rnd in $(seq "$ROUNDS"); do
    if ((RESTART_EVERY > 0 && rnd > 1 && (rnd - 1) % RESTART_EVERY == 0)); then
        stop_pair
        epoch=$((epoch + 1))
        log "fresh processes (epoch $epoch)"
        start_pair "$epoch"
    fi
    if ((rnd % 2)); then order=(a b); else order=(b a); fi
    for s in "${order[@]}"; do
        t0=$(cpu_ns "${PID[$s]}")
        read -r req p50 p99 errs <<<"$(fixed_rate "http://127.0.0.1:${PORT[$s]}/" "$SLICE_SECONDS" "$OUT/r$rnd-${NAME[$s]}.txt")"
        t1=$(cpu_ns "${PID[$s]}")
        kill -0 "${PID[$s]}" 2>/dev/null || die "${NAME[$s]} died; see $OUT/$s.stderr"
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        SERVED[$s]=$((SERVED[$s] + req))
        ERRORS[$s]=$((ERRORS[$s] + errs))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "${NAME[$s]}" "$req" "$cpu_us" "$p50" "$p99" "$errs" >>"$OUT/slices.tsv"
        log "r$rnd ${NAME[$s]}: $req requests, $cpu_us CPU-µs/req, p50 $p50 ms, p99 $p99 ms, errors $errs"
    done
done

sent=$((RATE * SLICE_SECONDS * ROUNDS))
for s in a b; do
    alive=running
    kill -0 "${PID[$s]}" 2>/dev/null || alive=DEAD
    echo "sanity ${NAME[$s]}: ${SERVED[$s]} requests served of about $sent sent, ${ERRORS[$s]} errors, $alive"
done >"$OUT/sanity.txt"
# what the hooks check after the rounds is part of the sanity lines (not in
# a pipeline: a hook may reap a process it started)
hook hook_done >>"$OUT/sanity.txt"
cat "$OUT/sanity.txt" >&2
{
    python3 "$HERE/paired.py" "$OUT/slices.tsv" "${NAME[a]}" "${NAME[b]}" cpu_us_per_req p50_ms p99_ms
    cat "$OUT/sanity.txt"
} | tee "$OUT/summary.txt"
