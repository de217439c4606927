#!/usr/bin/env bash
# Idle RSS of cutover binaries, measured the way run.sh measures it, with
# the breakdown run.sh does not print: which mappings are resident, and how
# much of each is the process's own (anonymous, dirty) and how much clean
# file pages (the binary's code, libc's).
#
# Each start: a fresh private copy of the binary (as run.sh makes, and as an
# image's layer is written when it is unpacked; the kernel maps the pages of
# the page cache in the 64 KiB around each fault), the bench config (benches/load/cutover.toml,
# one worker) against the bench's backend nginx, the sanity requests run.sh
# makes (HTTP/1.1 and h2c, 13 bytes and 16 KiB), one second idle, then
# VmRSS, /proc/PID/smaps_rollup and /proc/PID/smaps read. STARTS starts per
# binary, interleaved, and the median.
#
# Usage: flock /work/wt/bench.lock benches/load/idle_rss.sh NAME=BIN [NAME=BIN...]
# Environment: STARTS=5, OUT=/tmp/cutover-idle-<utc time>, BASE_PORT=18000,
#   PROXY_CPU=0 LOAD_CPU=1, DROP_COPY=0 (1: run the binary in place, no copy),
#   AT_IDLE="cmd args" (run as `cmd args PID EXE` at the reading, output kept
#   in OUT as NAME.START.at_idle), ECHO=1 (run.sh's order: each start begins
#   against echo_headers.py on the backend's port, sends the header-echo
#   requests, then the backend nginx takes the port back, as run.sh does)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BASE_PORT="${BASE_PORT:-18000}"
STARTS="${STARTS:-5}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
OUT="${OUT:-/tmp/cutover-idle-$(date -u +%Y%m%dT%H%M%SZ)}"

# shellcheck source=benches/load/common.sh
source "$HERE/common.sh"

(($#)) || die "usage: idle_rss.sh NAME=BIN [NAME=BIN...]"
declare -A BIN
names=()
for arg in "$@"; do
    name=${arg%%=*} bin=${arg#*=}
    [[ "$name" != "$arg" && -x "$bin" ]] || die "not NAME=executable: $arg"
    BIN[$name]="$bin"
    names+=("$name")
done

prepare_tmp cutover-idle
check_ports_free
URL="http://127.0.0.1:$CUTOVER"

start_backend() {
    taskset -c "$LOAD_CPU" nginx -c "$TMP/backend-nginx.conf" -p "$TMP" >>"$OUT/backend.stdout" 2>&1 &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_http "http://127.0.0.1:$BACKEND/"
}
stop_backend() { kill -TERM "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null || true; forget_pid "$BACKEND_PID"; }
[[ "${ECHO:-0}" == 1 ]] || start_backend

# smaps -> one line per mapping group: name rss_kb anon_kb private_dirty_kb
smaps_groups() {
    awk -v bin="$2" '
        /^[0-9a-f]+-[0-9a-f]+ / {
            perms = $2; path = (NF >= 6 ? $6 : "")
            if (path == bin) g = "binary " perms
            else if (path ~ /libc\.so/) g = "libc " perms
            else if (path ~ /libm\.so/) g = "libm " perms
            else if (path ~ /libgcc_s/) g = "libgcc_s " perms
            else if (path ~ /ld-linux/) g = "ld.so " perms
            else if (path == "[heap]") g = "heap"
            else if (path == "[stack]") g = "main stack"
            else if (path ~ /^\[/) g = path
            else if (path == "") g = "anon " perms
            else g = path " " perms
            next
        }
        /^Rss:/ { rss[g] += $2 }
        /^Anonymous:/ { an[g] += $2 }
        /^Private_Dirty:/ { pd[g] += $2 }
        END { for (k in rss) if (rss[k] > 0) printf "%s\t%d\t%d\t%d\n", k, rss[k], an[k], pd[k] }
    ' "$1" | sort -t$'\t' -k2,2nr
}

printf 'name\tstart\trss_kb\tanon_kb\tfile_kb\tprivate_dirty_kb\tthreads\n' >"$OUT/idle.tsv"
for s in $(seq "$STARTS"); do
    for name in "${names[@]}"; do
        if [[ "${DROP_COPY:-0}" == 1 ]]; then exe="${BIN[$name]}"; else
            exe="$TMP/$name"; rm -f "$exe"; cp "${BIN[$name]}" "$exe"
        fi
        if [[ "${ECHO:-0}" == 1 ]]; then
            taskset -c "$LOAD_CPU" python3 "$HERE/echo_headers.py" "$BACKEND" >"$OUT/echo.stdout" 2>&1 &
            echo_pid=$!
            PIDS+=("$echo_pid")
            wait_http "http://127.0.0.1:$BACKEND/"
        fi
        taskset -c "$PROXY_CPU" env RUST_LOG=warn "$exe" run --config "$TMP/cutover.toml" >"$OUT/$name.$s.stdout" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        wait_http "$URL/"
        curl -s -o /dev/null "$URL/headers?x=1"
        curl -s -o /dev/null --http2-prior-knowledge "$URL/headers?x=1"
        if [[ "${ECHO:-0}" == 1 ]]; then
            kill -TERM "$echo_pid"; wait "$echo_pid" 2>/dev/null || true; forget_pid "$echo_pid"
            start_backend
        fi
        curl -s -o /dev/null "$URL/"
        curl -s -o /dev/null "$URL/16k"
        wait_http "$URL/" --http2-prior-knowledge
        curl -s -o /dev/null --http2-prior-knowledge "$URL/"
        sleep 1
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
        cp "/proc/$pid/smaps_rollup" "$OUT/$name.$s.smaps_rollup"
        cp "/proc/$pid/smaps" "$OUT/$name.$s.smaps"
        smaps_groups "$OUT/$name.$s.smaps" "$exe" >"$OUT/$name.$s.groups"
        if [[ -n "${AT_IDLE:-}" ]]; then $AT_IDLE "$pid" "$exe" >"$OUT/$name.$s.at_idle" 2>&1 || true; fi
        read -r anon pd < <(awk '/^Anonymous:/ { a = $2 } /^Private_Dirty:/ { d = $2 } END { print a, d }' "$OUT/$name.$s.smaps_rollup")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$s" "$rss" "$anon" "$((rss - anon))" "$pd" "$threads" >>"$OUT/idle.tsv"
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; forget_pid "$pid"
        [[ "${ECHO:-0}" != 1 ]] || stop_backend
    done
done

echo "idle RSS, $STARTS starts each (KiB; median, min-max); raw in $OUT"
for name in "${names[@]}"; do
    awk -F'\t' -v n="$name" '$1 == n { r[++k] = $3; a[k] = $4; f[k] = $5; d[k] = $6; t = $7 }
        function med(x, m,   i, j, v, s) { for (i = 1; i <= m; i++) s[i] = x[i];
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (s[j] < s[i]) { v = s[i]; s[i] = s[j]; s[j] = v }
            lo = s[1]; hi = s[m]; return (m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2) }
        END { printf "%-16s rss %6.0f (%d-%d)  ", n, med(r, k), lo, hi
              printf "anon %5.0f  file %5.0f  private_dirty %5.0f  threads %s\n", med(a, k), med(f, k), med(d, k), t }' "$OUT/idle.tsv"
done
# A stale list (build.rs) lays out little: say how much of it each binary has.
if command -v nm >/dev/null && [[ -s "$REPO/link/start-up-order.txt" ]]; then
    echo "link/start-up-order.txt: names found in each binary (of $(wc -l <"$REPO/link/start-up-order.txt")):"
    for name in "${names[@]}"; do
        printf '  %-16s %s\n' "$name" "$(nm -j "${BIN[$name]}" 2>/dev/null | sort -u | comm -12 - <(sort -u "$REPO/link/start-up-order.txt") | wc -l)"
    done
fi
echo "per mapping, the last start (KiB: rss anon private_dirty):"
for name in "${names[@]}"; do
    echo "  $name"
    sed 's/^/    /' "$OUT/$name.$STARTS.groups" | head -20
done
