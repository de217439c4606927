#!/usr/bin/env bash
# Does a slow shadow cost the primary latency? The primary's p99 at a fixed
# rate through a route mirrored to a shadow that answers in 5 s, against
# the same route without a mirror (issue 26).
#
# Two cutover processes of one binary run side by side on the proxy's CPU in
# front of the load benchmark's nginx backend: one with the load
# benchmark's config, one with the same config plus a `[routes.mirror]`
# (PERCENT of the requests) to a shadow pool whose one backend
# (slow_backend.py, on the load tool's CPU) answers every request after
# SHADOW_DELAY seconds. At PERCENT=100 and the default rate the copies fill
# the route's 256 in flight and the rest are dropped: the worst a slow
# shadow does. In each round both take a slice of SLICE_SECONDS of h2load
# --h1 --rps, in alternating order; printed: per round each one's p99 (over
# every request of the slice) and their ratio, and over all rounds the
# median ratio, its range and a seeded bootstrap interval; then the copies
# counted by cutover_mirror_requests_total and by the shadow itself.
#
# Run (the release binary must exist: cargo build --release):
#   benches/load/mirror_p99.sh                 # 8 rounds x 2 x 5 s, under 2 minutes
# Settings (environment):
#   ROUNDS=8 SLICE_SECONDS=5 RATE=2000 PERCENT=100 SHADOW_DELAY=5
#   CUTOVER_BIN=path (default $CARGO_TARGET_DIR/release/cutover)
#   PROXY_CPU=0 LOAD_CPU=1 BASE_PORT=18500 OUT=/tmp/cutover-mirror-<time>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-8}"
SLICE_SECONDS="${SLICE_SECONDS:-5}"
RATE="${RATE:-2000}"
PERCENT="${PERCENT:-100}"
SHADOW_DELAY="${SHADOW_DELAY:-5}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18500}"
OUT="${OUT:-/tmp/cutover-mirror-$(date -u +%Y%m%dT%H%M%SZ)}"
CUTOVER_BIN="${CUTOVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/cutover}"
SHADOW=$((BASE_PORT + 30))

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"
source "$HERE/fixed_rate.sh"

[[ -x "$CUTOVER_BIN" ]] || die "no cutover binary at $CUTOVER_BIN (cargo build --release)"
for tool in nginx h2load taskset curl python3; do command -v "$tool" >/dev/null || die "needs $tool"; done
prepare_tmp cutover-mirror
private_cutover_copy
cp "$TMP/cutover.toml" "$TMP/plain.toml"
cp "$TMP/cutover-pgo.toml" "$TMP/mirrored.toml"
# the benchmark's config ends in its one [[routes]] table, which this extends
printf '[routes.mirror]\npool = "shadow"\npercent = %s\n\n[pools.shadow]\nbackends = ["127.0.0.1:%s"]\n' \
    "$PERCENT" "$SHADOW" >>"$TMP/mirrored.toml"
"$CUTOVER_BIN" check "$TMP/mirrored.toml" >/dev/null
check_ports_free

start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"
start shadow "$LOAD_CPU" python3 "$HERE/slow_backend.py" "$SHADOW" "$SHADOW_DELAY"
start plain "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/plain.toml"
start mirrored "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/mirrored.toml"
declare -A URL=([plain]="http://127.0.0.1:$CUTOVER/" [mirrored]="http://127.0.0.1:$CUTOVER_PGO/")
declare -A PID=([plain]="$PID_plain" [mirrored]="$PID_mirrored")
for p in plain mirrored; do wait_http "${URL[$p]}"; done

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cutover $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty'), $CUTOVER_BIN"
    echo "settings: ROUNDS=$ROUNDS SLICE_SECONDS=$SLICE_SECONDS RATE=$RATE PERCENT=$PERCENT SHADOW_DELAY=${SHADOW_DELAY}s, $(h2load --version | head -1) --h1 -c50 --rps"
} | tee "$OUT/meta.txt" >&2

# warm-up: pools filled; the mirrored one's copies in flight at their bound
for p in plain mirrored; do fixed_rate "${URL[$p]}" 2 "$OUT/warmup-$p.txt" >/dev/null; done

printf 'round\tproxy\trequests\tcpu_us_per_req\tp99_ms\terrors\n' >"$OUT/slices.tsv"
for rnd in $(seq "$ROUNDS"); do
    if ((rnd % 2)); then order=(plain mirrored); else order=(mirrored plain); fi
    for p in "${order[@]}"; do
        t0=$(cpu_ns "${PID[$p]}")
        read -r req p99 errs <<<"$(fixed_rate "${URL[$p]}" "$SLICE_SECONDS" "$OUT/r$rnd-$p.txt")"
        t1=$(cpu_ns "${PID[$p]}")
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p died; see $OUT/$p.stderr"
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "$p" "$req" "$cpu_us" "$p99" "$errs" >>"$OUT/slices.tsv"
        log "r$rnd $p: $req requests, p99 $p99 ms, $cpu_us CPU-µs/req, errors $errs"
    done
done

curl -s "http://127.0.0.1:$CUTOVER_PGO_ADMIN/metrics" | grep '^cutover_mirror_requests_total' >"$OUT/mirror-metrics.txt" || true
kill -TERM "$PID_shadow"
wait "$PID_shadow" 2>/dev/null || true
forget_pid "$PID_shadow"
{
    echo "copies by result (cutover_mirror_requests_total):"
    sed 's/^/  /' "$OUT/mirror-metrics.txt"
    echo "the shadow: $(cat "$OUT/shadow.stdout")"
} | tee "$OUT/copies.txt" >&2
python3 "$HERE/paired.py" "$OUT/slices.tsv" plain mirrored p99_ms cpu_us_per_req | tee "$OUT/summary.txt"
