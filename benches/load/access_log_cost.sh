#!/usr/bin/env bash
# What logging every request costs: cutover's CPU per request at a fixed
# rate with the access log off, against the same binary logging every
# request (JSON by default) to a file.
#
# Two cutover processes of one binary run side by side on the proxy's CPU,
# one without [access_log] and one with it, in front of the load
# benchmark's nginx backend; the load tool (h2load --h1 --rps, which sends
# in bursts every 10 ms; see NOTES.md) runs on the other CPU. In each round
# both take a slice of SLICE_SECONDS, in alternating order (the second of a
# pair tends to be the faster on a shared VM), and each process's CPU time
# is read from schedstat around its slice. Printed: per slice CPU-µs per
# request and p99, per round the ratio logged ÷ off, and over all rounds
# the median ratio with its range and a seeded bootstrap interval of the
# geometric mean. The log's lines are counted against the requests served,
# and cutover_access_log_dropped_total is read, so a cheap run that dropped
# lines cannot pass for a cheap log.
#
# Run (the release binary must exist: cargo build --release):
#   benches/load/access_log_cost.sh              # 8 rounds x 2 x 5 s, about 1.5 minutes
# Settings (environment):
#   ROUNDS=8 SLICE_SECONDS=5 RATE=5000 FORMAT=json|text
#   CUTOVER_BIN=path (default $CARGO_TARGET_DIR/release/cutover)
#   PROXY_CPU=0 LOAD_CPU=1 BASE_PORT=18400 OUT=/tmp/cutover-logcost-<time>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-8}"
SLICE_SECONDS="${SLICE_SECONDS:-5}"
RATE="${RATE:-5000}"
FORMAT="${FORMAT:-json}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18400}"
OUT="${OUT:-/tmp/cutover-logcost-$(date -u +%Y%m%dT%H%M%SZ)}"
CUTOVER_BIN="${CUTOVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/cutover}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"
source "$HERE/fixed_rate.sh"

[[ -x "$CUTOVER_BIN" ]] || die "no cutover binary at $CUTOVER_BIN (cargo build --release)"
for tool in nginx h2load taskset curl python3; do command -v "$tool" >/dev/null || die "needs $tool"; done
prepare_tmp cutover-logcost
private_cutover_copy
# off: the load benchmark's config; logged: the same on the second port
# pair, with every request logged to a file
cp "$TMP/cutover.toml" "$TMP/off.toml"
cp "$TMP/cutover-pgo.toml" "$TMP/logged.toml"
printf '\n[access_log]\nto = "%s/access.log"\nformat = "%s"\n' "$TMP" "$FORMAT" >>"$TMP/logged.toml"
"$CUTOVER_BIN" check "$TMP/logged.toml" >/dev/null
check_ports_free

start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"
start off "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/off.toml"
start logged "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/logged.toml"
declare -A URL=([off]="http://127.0.0.1:$CUTOVER/" [logged]="http://127.0.0.1:$CUTOVER_PGO/")
declare -A PID=([off]="$PID_off" [logged]="$PID_logged")
declare -A ADMIN=([off]="$CUTOVER_ADMIN" [logged]="$CUTOVER_PGO_ADMIN")
for p in off logged; do wait_http "${URL[$p]}"; done

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cutover $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty'), $CUTOVER_BIN"
    echo "settings: ROUNDS=$ROUNDS SLICE_SECONDS=$SLICE_SECONDS RATE=$RATE FORMAT=$FORMAT, $(h2load --version | head -1) --h1 -c50 --rps"
} | tee "$OUT/meta.txt" >&2

# warm-up: pools filled, buffers grown, the log file created
for p in off logged; do fixed_rate "${URL[$p]}" 2 "$OUT/warmup-$p.txt" >/dev/null; done
lines0=$(wc -l <"$TMP/access.log")

printf 'round\tproxy\trequests\tcpu_us_per_req\tp99_ms\terrors\n' >"$OUT/slices.tsv"
served=0
for rnd in $(seq "$ROUNDS"); do
    if ((rnd % 2)); then order=(off logged); else order=(logged off); fi
    for p in "${order[@]}"; do
        t0=$(cpu_ns "${PID[$p]}")
        read -r req p99 errs <<<"$(fixed_rate "${URL[$p]}" "$SLICE_SECONDS" "$OUT/r$rnd-$p.txt")"
        t1=$(cpu_ns "${PID[$p]}")
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p died; see $OUT/$p.stderr"
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        [[ $p == logged ]] && served=$((served + req))
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "$p" "$req" "$cpu_us" "$p99" "$errs" >>"$OUT/slices.tsv"
        log "r$rnd $p: $req requests, $cpu_us CPU-µs/req, p99 $p99 ms, errors $errs"
    done
done

# every logged request's line is in the file (h2load's cut-off requests
# may add a few lines beyond its count), and none was dropped
sleep 1
lines=$(($(wc -l <"$TMP/access.log") - lines0))
dropped=$(curl -s "http://127.0.0.1:${ADMIN[logged]}/metrics" | awk '$1 == "cutover_access_log_dropped_total" { print $2 }')
echo "log lines written during the rounds: $lines for $served requests counted; dropped: ${dropped:-?}" | tee "$OUT/lines.txt" >&2
python3 "$HERE/paired.py" "$OUT/slices.tsv" off logged cpu_us_per_req p99_ms | tee "$OUT/summary.txt"
