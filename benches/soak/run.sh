#!/usr/bin/env bash
# The soak run: SOAK_MINUTES (default 30) of steady mixed load on cutover,
# on 127.0.0.1 only, while
#   - the config is rewritten every 10 s (the split changes; the file watch
#     reloads it),
#   - one backend is killed (SIGKILL) and restarted every minute, in turn,
#   - SIGHUP arrives at random (every 5 to 25 s).
# The load (soak.py): HTTP/1.1 GETs on keep-alive and on new connections
# (small bodies and 1 MiB ones), 1 MiB POSTs, WebSocket echo sessions and
# h2c GETs (nghttp, prior knowledge, four streams at once), paced to a few hundred requests a
# second so that a shared machine stays usable.
#
# It prints every failed request with its cause as it happens, the proxy's
# RSS and open file descriptors each minute, and at the end one line:
#   PASS  no failed request that a retry rule should have saved (a GET, or
#         an h2c GET), and RSS and descriptors flat after the first minute
#         (RSS within 20 % + 16 MiB of the minute-1 sample, descriptors
#         within 64);
#   FAIL  otherwise, with the reason.
# A POST or WebSocket session in flight to a backend at its kill fails by
# design (never sent again): reported, not counted against the run.
#
# Not part of `cargo test`. Stops by itself after SOAK_MINUTES (plus the
# build); Ctrl-C stops it early, and everything it started is killed.
#
#   SOAK_MINUTES=3 benches/soak/run.sh
#   BASE_PORT=27100 (the ports used: BASE_PORT..BASE_PORT+5)
#   SOAK_PROFILE=release (default: the dev build, which builds fastest)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MINUTES=${SOAK_MINUTES:-30}
BASE_PORT=${BASE_PORT:-27100}
PROFILE=${SOAK_PROFILE:-dev}
PROXY=$((BASE_PORT + 0))
ADMIN=$((BASE_PORT + 1))
BACKENDS=($((BASE_PORT + 2)) $((BASE_PORT + 3)) $((BASE_PORT + 4)) $((BASE_PORT + 5)))

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

PIDS=()
declare -A BACKEND_PID
TMP=$(mktemp -d)
cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}" "${BACKEND_PID[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}" "${BACKEND_PID[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

command -v curl >/dev/null || { echo "error: curl is needed (metrics)" >&2; exit 1; }
command -v nghttp >/dev/null || { echo "error: nghttp (nghttp2-client) is needed for the h2c load" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is needed for the backends and the load" >&2; exit 1; }

log "building cutover ($PROFILE)"
(cd "$REPO" && cargo build --quiet --profile "$PROFILE" --bin cutover)
DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN="${CARGO_TARGET_DIR:-$REPO/target}/$DIR/cutover"

start_backend() {
    local i=$1
    python3 "$HERE/soak.py" backend "${BACKENDS[$i]}" "b$i" &
    BACKEND_PID[$i]=$!
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# The split alternates between two settings, so each rewrite is a change.
write_config() {
    local blue=$1
    cat >"$TMP/cutover.toml.new" <<TOML
[server]
listen = ["127.0.0.1:$PROXY"]
workers = 1

[admin]
listen = "127.0.0.1:$ADMIN"

[pools.blue]
backends = ["127.0.0.1:${BACKENDS[0]}", "127.0.0.1:${BACKENDS[1]}"]
[pools.blue.health]
interval = "1s"
timeout = "1s"

[pools.green]
backends = ["127.0.0.1:${BACKENDS[2]}", "127.0.0.1:${BACKENDS[3]}"]
[pools.green.health]
interval = "1s"
timeout = "1s"

[[routes]]
name = "app"
split = { blue = $blue, green = $((100 - blue)) }
TOML
    mv "$TMP/cutover.toml.new" "$TMP/cutover.toml"
}

for i in 0 1 2 3; do start_backend "$i"; done
for port in "${BACKENDS[@]}"; do wait_port "$port"; done
write_config 50
"$BIN" run -c "$TMP/cutover.toml" 2>"$TMP/cutover.log" &
CUTOVER_PID=$!
PIDS+=("$CUTOVER_PID")
wait_port "$PROXY"
log "cutover $CUTOVER_PID on 127.0.0.1:$PROXY, backends ${BACKENDS[*]}; $MINUTES minute(s) of load"

SECONDS_TOTAL=$((MINUTES * 60))
: >"$TMP/load.jsonl"
python3 "$HERE/soak.py" load "$PROXY" "$SECONDS_TOTAL" >"$TMP/load.jsonl" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
tail -n +1 -f "$TMP/load.jsonl" --pid "$LOAD_PID" | grep --line-buffered -v '"summary"' | sed -u 's/^/  failed: /' &
PIDS+=($!)

sample() {
    local rss fds
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$CUTOVER_PID/status")
    fds=$(find "/proc/$CUTOVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$rss $fds"
}

START=$(date +%s)
NEXT_HUP=$((START + 5 + RANDOM % 21))
KILLED=0
RSS_BASE=""
FDS_BASE=""
RSS_LAST=0
FDS_LAST=0
RELOADS=0
HUPS=0
KILLS=0
tick=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    sleep 1
    tick=$((tick + 1))
    now=$(date +%s)
    kill -0 "$CUTOVER_PID" 2>/dev/null || { log "FAIL: cutover exited"; tail -20 "$TMP/cutover.log"; exit 1; }
    if ((tick % 10 == 0)); then
        write_config $(( (tick / 10) % 2 == 0 ? 50 : 80 ))
        RELOADS=$((RELOADS + 1))
    fi
    if ((now >= NEXT_HUP)); then
        kill -HUP "$CUTOVER_PID"
        HUPS=$((HUPS + 1))
        NEXT_HUP=$((now + 5 + RANDOM % 21))
    fi
    if ((tick % 60 == 30)); then
        i=$((KILLED % 4))
        kill -KILL "${BACKEND_PID[$i]}" 2>/dev/null || true
        wait "${BACKEND_PID[$i]}" 2>/dev/null || true
        KILLS=$((KILLS + 1))
        sleep 2
        start_backend "$i"
        KILLED=$((KILLED + 1))
        log "backend b$i (127.0.0.1:${BACKENDS[$i]}) killed and restarted after 2 s"
    fi
    if ((tick % 60 == 0)); then
        read -r RSS_LAST FDS_LAST < <(sample)
        log "minute $((tick / 60)): RSS $((RSS_LAST / 1024)) MiB, open fds $FDS_LAST, config rewrites $RELOADS, SIGHUPs $HUPS, backend kills $KILLS"
        if [ -z "$RSS_BASE" ]; then RSS_BASE=$RSS_LAST; FDS_BASE=$FDS_LAST; fi
    fi
done
wait "$LOAD_PID" || true

SUMMARY=$(grep '"summary"' "$TMP/load.jsonl" || true)
[ -n "$SUMMARY" ] || { log "FAIL: the load ended without a summary"; exit 1; }
read -r FAILED SAVED OK < <(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
print(s["failed"], s["failed_should_have_been_saved"], " ".join(f"{k}={v}" for k, v in sorted(s["ok"].items())))
' "$SUMMARY")
read -r RSS_END FDS_END < <(sample)
log "answered: $OK"
log "failed requests: $FAILED, of which a retry rule should have saved: $SAVED"
log "reloads: $RELOADS config rewrites, $HUPS SIGHUPs; $KILLS backend kills"
log "cutover_config_reloads_total: $(curl -s "http://127.0.0.1:$ADMIN/metrics" | grep '^cutover_config_reloads_total' | tr '\n' ' ')"
RSS_BASE=${RSS_BASE:-$RSS_END}
FDS_BASE=${FDS_BASE:-$FDS_END}
log "RSS minute 1: $((RSS_BASE / 1024)) MiB, end: $((RSS_END / 1024)) MiB; fds minute 1: $FDS_BASE, end: $FDS_END"

REASONS=()
((SAVED == 0)) || REASONS+=("$SAVED failed request(s) that a retry rule should have saved")
((RSS_END <= RSS_BASE + RSS_BASE / 5 + 16384)) || REASONS+=("RSS grew from $((RSS_BASE / 1024)) to $((RSS_END / 1024)) MiB")
((FDS_END <= FDS_BASE + 64)) || REASONS+=("open fds grew from $FDS_BASE to $FDS_END")
if ((${#REASONS[@]} == 0)); then
    log "PASS ($MINUTES minute(s))"
else
    log "FAIL: $(IFS='; '; echo "${REASONS[*]}")"
    exit 1
fi
