#!/usr/bin/env bash
# What fleet mode costs the request path: cutover's CPU per request and p99
# at a fixed rate alone (A), against the same binary in a fleet on a real
# etcd (B: its guard's evidence published every 500 ms, and, as the only
# replica, leading: it also reads the evidence back and judges it), with
# benches/load/paired_ab.sh (which see for the method and the output). The
# goal is no measurable cost: publishing happens off the request path.
#
# Run (the release binary must exist: cargo build --release; etcd from
# Debian's etcd-server, started here on the load tool's CPU):
#   benches/fleet/request_cost.sh              # 8 rounds x 2 x 5 s, about 1.5 minutes
# Settings (environment): paired_ab.sh's: ROUNDS=8 SLICE_SECONDS=5 RATE=5000
#   CUTOVER_BIN=path BASE_PORT=18500 OUT=/tmp/cutover-fleetcost-<time> ...
set -euo pipefail

LOAD="$(cd "$(dirname "${BASH_SOURCE[0]}")/../load" && pwd)"
export BASE_PORT="${BASE_PORT:-18500}"
export ETCD=$((BASE_PORT + 40)) ETCD_PEER=$((BASE_PORT + 41))
export OUT="${OUT:-/tmp/cutover-fleetcost-$(date -u +%Y%m%dT%H%M%SZ)}"
command -v etcd >/dev/null || { echo "needs etcd" >&2; exit 1; }

"$LOAD/paired_ab.sh" --name-a alone --name-b fleet \
    --append-b "$(printf '[fleet]\netcd = ["http://127.0.0.1:%s"]\nprefix = "/cutover/bench"\nreplica = "bench"' "$ETCD")" \
    --hooks <(
        cat <<'EOF'
start etcd "$LOAD_CPU" etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ETCD/health" >/dev/null && break; sleep 0.1; done
hook_started() {
    local leader
    leader=$(curl -s "http://127.0.0.1:$ADMIN_b/metrics" | awk '$1 == "cutover_fleet_leader" { print $2 }')
    [[ $leader == 1 ]] || log "note: the fleet replica does not lead yet (cutover_fleet_leader=${leader:-?})"
}
# the fleet replica published and judged its evidence all along
hook_done() {
    local metrics count
    metrics=$(curl -s "http://127.0.0.1:$ADMIN_b/metrics")
    count=$(curl -s "http://127.0.0.1:$ETCD/v3/kv/range" -d '{"key":"L2N1dG92ZXIvYmVuY2gvZXZpZGVuY2Uv","range_end":"L2N1dG92ZXIvYmVuY2gvZXZpZGVuY2Uw","count_only":true}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
    echo "fleet replica: connected $(awk '$1 == "cutover_fleet_connected" { print $2 }' <<<"$metrics"), leader $(awk '$1 == "cutover_fleet_leader" { print $2 }' <<<"$metrics"); evidence keys in etcd: $count"
}
EOF
    ) "$@" - -
