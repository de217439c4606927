#!/usr/bin/env bash
# What fleet mode costs the request path: cutover's CPU per request and p99
# at a fixed rate alone, against the same binary in a fleet on a real etcd
# (its guard's evidence published every 500 ms, and, as the only replica,
# leading: it also reads the evidence back and judges it). The goal is no
# measurable cost: publishing happens off the request path.
#
# Two cutover processes of one binary run side by side on the proxy's CPU,
# one without [fleet] and one with it, in front of the load benchmark's
# nginx backend; the load tool (h2load --h1 --rps) and etcd run on the
# other CPU. In each round both take a slice of SLICE_SECONDS, in
# alternating order, and each process's CPU time is read from schedstat
# around its slice. Printed: per slice CPU-µs per request and p99, per round
# the ratio fleet ÷ alone, and over all rounds the median ratio with its
# range and a seeded bootstrap interval of the geometric mean (paired.py).
#
# Run (the release binary must exist: cargo build --release; etcd from
# Debian's etcd-server):
#   benches/fleet/request_cost.sh              # 8 rounds x 2 x 5 s, about 1.5 minutes
# Settings (environment):
#   ROUNDS=8 SLICE_SECONDS=5 RATE=5000
#   CUTOVER_BIN=path (default $CARGO_TARGET_DIR/release/cutover)
#   PROXY_CPU=0 LOAD_CPU=1 BASE_PORT=18500 OUT=/tmp/cutover-fleetcost-<time>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../load" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-8}"
SLICE_SECONDS="${SLICE_SECONDS:-5}"
RATE="${RATE:-5000}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BASE_PORT="${BASE_PORT:-18500}"
OUT="${OUT:-/tmp/cutover-fleetcost-$(date -u +%Y%m%dT%H%M%SZ)}"
CUTOVER_BIN="${CUTOVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/cutover}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"
source "$HERE/fixed_rate.sh"

[[ -x "$CUTOVER_BIN" ]] || die "no cutover binary at $CUTOVER_BIN (cargo build --release)"
for tool in nginx h2load taskset curl python3 etcd; do command -v "$tool" >/dev/null || die "needs $tool"; done
prepare_tmp cutover-fleetcost
private_cutover_copy
# alone: the load benchmark's config; fleet: the same on the second port
# pair, in a fleet on the etcd started below
ETCD=$((BASE_PORT + 40))
ETCD_PEER=$((BASE_PORT + 41))
cp "$TMP/cutover.toml" "$TMP/alone.toml"
cp "$TMP/cutover-pgo.toml" "$TMP/fleet.toml"
printf '\n[fleet]\netcd = ["http://127.0.0.1:%s"]\nprefix = "/cutover/bench"\nreplica = "bench"\n' "$ETCD" >>"$TMP/fleet.toml"
"$CUTOVER_BIN" check "$TMP/fleet.toml" >/dev/null
check_ports_free

start backend "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP"
start etcd "$LOAD_CPU" etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ETCD/health" >/dev/null && break; sleep 0.1; done
start alone "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/alone.toml"
start fleet "$PROXY_CPU" env RUST_LOG=warn "$CUTOVER_BIN" run --config "$TMP/fleet.toml"
declare -A URL=([alone]="http://127.0.0.1:$CUTOVER/" [fleet]="http://127.0.0.1:$CUTOVER_PGO/")
declare -A PID=([alone]="$PID_alone" [fleet]="$PID_fleet")
declare -A ADMIN=([alone]="$CUTOVER_ADMIN" [fleet]="$CUTOVER_PGO_ADMIN")
for p in alone fleet; do wait_http "${URL[$p]}"; done
leader=$(curl -s "http://127.0.0.1:${ADMIN[fleet]}/metrics" | awk '$1 == "cutover_fleet_leader" { print $2 }')
[[ $leader == 1 ]] || log "note: the fleet replica does not lead yet (cutover_fleet_leader=${leader:-?})"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cutover $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty'), $CUTOVER_BIN"
    echo "settings: ROUNDS=$ROUNDS SLICE_SECONDS=$SLICE_SECONDS RATE=$RATE, $(h2load --version | head -1) --h1 -c50 --rps"
} | tee "$OUT/meta.txt" >&2

# warm-up: pools filled, buffers grown, the first evidence published
for p in alone fleet; do fixed_rate "${URL[$p]}" 2 "$OUT/warmup-$p.txt" >/dev/null; done

printf 'round\tproxy\trequests\tcpu_us_per_req\tp99_ms\terrors\n' >"$OUT/slices.tsv"
for rnd in $(seq "$ROUNDS"); do
    if ((rnd % 2)); then order=(alone fleet); else order=(fleet alone); fi
    for p in "${order[@]}"; do
        t0=$(cpu_ns "${PID[$p]}")
        read -r req p99 errs <<<"$(fixed_rate "${URL[$p]}" "$SLICE_SECONDS" "$OUT/r$rnd-$p.txt")"
        t1=$(cpu_ns "${PID[$p]}")
        kill -0 "${PID[$p]}" 2>/dev/null || die "$p died; see $OUT/$p.stderr"
        cpu_us=$(awk -v d=$((t1 - t0)) -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? d / 1000 / n : 0) }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rnd" "$p" "$req" "$cpu_us" "$p99" "$errs" >>"$OUT/slices.tsv"
        log "r$rnd $p: $req requests, $cpu_us CPU-µs/req, p99 $p99 ms, errors $errs"
    done
done

# the fleet replica published and judged its evidence all along
metrics=$(curl -s "http://127.0.0.1:${ADMIN[fleet]}/metrics")
echo "fleet replica: connected $(awk '$1 == "cutover_fleet_connected" { print $2 }' <<<"$metrics"), leader $(awk '$1 == "cutover_fleet_leader" { print $2 }' <<<"$metrics"); evidence keys in etcd: $(curl -s "http://127.0.0.1:$ETCD/v3/kv/range" -d '{"key":"L2N1dG92ZXIvYmVuY2gvZXZpZGVuY2Uv","range_end":"L2N1dG92ZXIvYmVuY2gvZXZpZGVuY2Uw","count_only":true}' | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')" | tee "$OUT/fleet.txt" >&2
python3 "$HERE/paired.py" "$OUT/slices.tsv" alone fleet cpu_us_per_req p99_ms | tee "$OUT/summary.txt"
