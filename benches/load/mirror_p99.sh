#!/usr/bin/env bash
# Does a slow shadow cost the primary latency? The primary's p99 at a fixed
# rate through a route without a mirror (A), against the same route
# mirrored to a shadow that answers in 5 s (B), with paired_ab.sh (which see
# for the method and the output; issue 26).
#
# B's route mirrors PERCENT of the requests to a shadow pool whose one
# backend (slow_backend.py, on the load tool's CPU) answers every request
# after SHADOW_DELAY seconds. At PERCENT=100 and the default rate the copies
# fill the route's 256 in flight and the rest are dropped: the worst a slow
# shadow does. After the rounds: the copies counted by the last mirrored
# process's cutover_mirror_requests_total and by the shadow itself.
#
# Run (the release binary must exist: cargo build --release):
#   benches/load/mirror_p99.sh                 # 8 rounds x 2 x 5 s, under 2 minutes
# Settings (environment):
#   PERCENT=100 SHADOW_DELAY=5, and paired_ab.sh's: ROUNDS=8 SLICE_SECONDS=5
#   RATE=2000 CUTOVER_BIN=path BASE_PORT=18500 OUT=/tmp/cutover-mirror-<time> ...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export RATE="${RATE:-2000}" BASE_PORT="${BASE_PORT:-18500}"
export PERCENT="${PERCENT:-100}" SHADOW_DELAY="${SHADOW_DELAY:-5}" SHADOW=$((BASE_PORT + 30))
export OUT="${OUT:-/tmp/cutover-mirror-$(date -u +%Y%m%dT%H%M%SZ)}"
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }

# the benchmark's config ends in its one [[routes]] table, which this extends
"$HERE/paired_ab.sh" --name-a plain --name-b mirrored \
    --append-b "$(printf '[routes.mirror]\npool = "shadow"\npercent = %s\n\n[pools.shadow]\nbackends = ["127.0.0.1:%s"]' "$PERCENT" "$SHADOW")" \
    --hooks <(
        cat <<'EOF'
start shadow "$LOAD_CPU" python3 "$HERE/slow_backend.py" "$SHADOW" "$SHADOW_DELAY"
hook_done() {
    curl -s "http://127.0.0.1:$ADMIN_b/metrics" | grep '^cutover_mirror_requests_total' >"$OUT/mirror-metrics.txt" || true
    kill -TERM "$PID_shadow"
    wait "$PID_shadow" 2>/dev/null || true
    forget_pid "$PID_shadow"
    echo "copies by result (cutover_mirror_requests_total):"
    sed 's/^/  /' "$OUT/mirror-metrics.txt"
    echo "the shadow: $(cat "$OUT/shadow.stdout")"
}
EOF
    ) "$@" - -
