#!/usr/bin/env bash
# What logging every request costs: cutover's CPU per request at a fixed
# rate with the access log off (A), against the same binary logging every
# request (JSON by default) to a file (B), with paired_ab.sh (which see for
# the method and the output). The file is in a directory of its own, as
# docs/operations.md advises, not in the config's, whose watch would read
# an event per write (BESIDE=1 puts it there, as runs before 2026-12-07
# 03:10 UTC did). The log's lines are counted against the
# requests served, and cutover_access_log_dropped_total is read, so a cheap
# run that dropped lines cannot pass for a cheap log. Each thread's CPU per
# request is printed too (the request thread, and the log's writer thread).
#
# Run (the release binary must exist: cargo build --release):
#   benches/load/access_log_cost.sh              # 8 rounds x 2 x 5 s, about 1.5 minutes
# Settings (environment):
#   FORMAT=json|text, BESIDE=1, and paired_ab.sh's: ROUNDS=8 SLICE_SECONDS=5 RATE=5000
#   CUTOVER_BIN=path BASE_PORT=18400 OUT=/tmp/cutover-logcost-<time> ...
# Extra arguments go to paired_ab.sh (e.g. --bin-b to log with another build).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FORMAT="${FORMAT:-json}"
if [[ "${BESIDE:-}" == 1 ]]; then LOG_DIR=""; else LOG_DIR="log/"; fi
export LOG_DIR
export OUT="${OUT:-/tmp/cutover-logcost-$(date -u +%Y%m%dT%H%M%SZ)}"

"$HERE/paired_ab.sh" --name-a off --name-b logged \
    --append-b "$(printf '[access_log]\nto = "@SIDE_DIR@/%saccess.log"\nformat = "%s"' "$LOG_DIR" "$FORMAT")" \
    --hooks <(
        cat <<'EOF'
# every logged request's line is in the file (h2load's cut-off requests may
# add a few lines beyond its count), and none was dropped; counted over the
# rounds of each pair of processes, after its warm-up. Also each thread's
# CPU time (schedstat) over the same rounds, per request served: what the
# request thread pays for a line, apart from what the writer thread pays
# for writing it.
LINES=0 DROPPED=0
declare -A THREAD_NS FROM SUM=([a]=0 [b]=0)
mkdir -p "$TMP/b/$LOG_DIR"
threads() { # $1: +1 or -1, added to each thread's running total
    local side task
    for side in a b; do
        for task in /proc/"${PID[$side]}"/task/*; do
            local name ns
            name="$side $(cat "$task/comm" 2>/dev/null)" || continue
            ns=$(awk '{ print $1 }' "$task/schedstat" 2>/dev/null) || continue
            THREAD_NS[$name]=$(( ${THREAD_NS[$name]:-0} + $1 * ns ))
        done
    done
}
hook_warmed() {
    LINES0=$(wc -l <"$TMP/b/${LOG_DIR}access.log")
    threads -1
    FROM[a]=${SERVED[a]} FROM[b]=${SERVED[b]}
}
count_pair() {
    threads 1
    SUM[a]=$(( SUM[a] + SERVED[a] - FROM[a] )) SUM[b]=$(( SUM[b] + SERVED[b] - FROM[b] ))
    sleep 1
    local dropped
    LINES=$((LINES + $(wc -l <"$TMP/b/${LOG_DIR}access.log") - LINES0))
    dropped=$(curl -s "http://127.0.0.1:$ADMIN_b/metrics" | awk '$1 == "cutover_access_log_dropped_total" { print $2 }')
    DROPPED=$((DROPPED + ${dropped:-0}))
}
hook_stopping() { count_pair; }
hook_done() {
    count_pair
    echo "access log: $LINES lines written during the rounds for ${SERVED[b]} requests served; dropped: $DROPPED"
    local name
    for name in "${!THREAD_NS[@]}"; do
        (( THREAD_NS[$name] > 0 )) || continue
        awk -v name="$name" -v ns="${THREAD_NS[$name]}" -v n="${SUM[${name%% *}]}" \
            'BEGIN { printf "thread %s: %.2f CPU-µs per request served\n", name, ns / 1000 / n }'
    done | sort
}
EOF
    ) "$@" - -
