# Shared by run.sh and instructions.sh (sourced, not run): the port layout,
# logging, cleanup of everything started, installing missing tools, building
# cutover, and rendering the configs into a temp dir.
#
# The sourcing script sets HERE, REPO, BASE_PORT and OUT first.

# ------------------------------------------------------------------ ports --
BACKEND=$((BASE_PORT + 0))
BACKEND_H2=$((BASE_PORT + 1))
BACKEND_STATUS=$((BASE_PORT + 2))  # the backend's stub_status: connections it accepted (run.sh)
NGINX=$((BASE_PORT + 10))
NGINX_H2=$((BASE_PORT + 11))
HAPROXY=$((BASE_PORT + 20))
HAPROXY_H2=$((BASE_PORT + 21))
CUTOVER_PGO=$((BASE_PORT + 23))       # the PGO build beside the plain one (run.sh)
CUTOVER_PGO_ADMIN=$((BASE_PORT + 24))
CUTOVER=$((BASE_PORT + 25))
CUTOVER_ADMIN=$((BASE_PORT + 26))
MAPS=$((BASE_PORT + 22))    # examples/maps_floor.rs (instructions.sh and floors.sh)
RAW=$((BASE_PORT + 27))     # examples/raw_floor.rs (instructions.sh and floors.sh)
FLOOR=$((BASE_PORT + 28))   # examples/hyper_floor.rs (instructions.sh and floors.sh)
INLINE=$((BASE_PORT + 29))  # examples/inline_floor.rs (instructions.sh and floors.sh)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Where oha is: on PATH, else where `cargo install` puts it.
oha_path() { command -v oha || echo "$HOME/.cargo/bin/oha"; }

# RATE requests/s spread evenly over 50 HTTP/1.1 connections for SECONDS,
# oha pinned to LOAD_CPU, its JSON in OUTFILE (read it with oha_summary);
# PREFIX, if given, is a command that runs it (a CPU-time wrapper). OHA
# names the binary (default: oha_path).
oha_at_rate() { # url seconds outfile [prefix...]
    local url=$1 secs=$2 outf=$3
    shift 3
    "$@" timeout $((secs + 30)) taskset -c "$LOAD_CPU" "${OHA:-$(oha_path)}" --no-tui --output-format json \
        -z "${secs}s" -q "$RATE" -c 50 --latency-correction "$url" >"$outf" 2>"$outf.err" || true
}

# The summary of oha's JSON output in FILE, on one line: "succeeded
# req/s p50_ms p99_ms errors" (requests still in flight when the run's time
# is up are the tool stopping, not errors); "0 - - - 1" if it cannot be read.
oha_summary() { # file
    python3 - "$1" <<'PY' || { warn "could not parse $1"; echo "0 - - - 1"; }
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(
    v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline")
p = d["latencyPercentiles"]
print(ok, f"{s['requestsPerSec']:.1f}", f"{p['p50'] * 1000:.3f}", f"{p['p99'] * 1000:.3f}", bad)
PY
}

wait_http() { # url [curl args...]: wait up to 10 s for a 200
    local url=$1; shift
    for _ in $(seq 100); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null)" == 200 ]] && return 0
        sleep 0.1
    done
    die "$url did not answer 200"
}

# ---------------------------------------------------------------- cleanup --
PIDS=()          # every long-running process the script started (and has not reaped yet)
TMP=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid c all=()
    for pid in "${PIDS[@]}"; do
        all+=("$pid")
        # nginx workers are children of the master we started
        for c in $(pgrep -P "$pid" 2>/dev/null || true); do all+=("$c"); done
    done
    if ((${#all[@]})); then
        kill -TERM "${all[@]}" 2>/dev/null || true
        for _ in $(seq 100); do
            local alive=0
            for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        kill -KILL "${all[@]}" 2>/dev/null || true
        for pid in "${PIDS[@]}"; do
            wait "$pid" 2>/dev/null || true
            # valgrind's gdbserver FIFOs, left behind when a valgrind'd process is killed
            rm -f /tmp/vgdb-pipe-*-"$pid"-by-* 2>/dev/null || true
        done
    fi
    if [[ -n "$TMP" && -d "$TMP" && -z "${KEEP_TMP:-}" ]]; then rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() { # drop a reaped pid from PIDS, so cleanup never signals a recycled pid
    local keep=() q
    for q in "${PIDS[@]}"; do [[ "$q" == "$1" ]] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- install --
install_missing() { # Debian packages still missing (may repeat)
    local need=()
    (($#)) && mapfile -t need < <(printf '%s\n' "$@" | sort -u)
    if ((${#need[@]})); then
        [[ -z "${SKIP_INSTALL:-}" ]] || die "missing: ${need[*]} (SKIP_INSTALL is set)"
        log "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    # the Debian packages enable services; make sure none of them is running
    # (they would listen on :80 and use CPU). We only stop what the packages run.
    local svc
    for svc in nginx haproxy; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
            warn "stopping the system $svc service"; systemctl stop "$svc" || true
        fi
    done
}

# ------------------------------------------------------------------ build --
# The plain build is what `cargo build --release`, `cargo run --release` and
# `cargo install` give; the PGO build (scripts/pgo-build.sh) is what the
# container image ships. Both honour SKIP_BUILD=1 (use what is there);
# PGO_BIN=/path uses that binary as the PGO build and builds nothing for it.
build_cutover_plain() { # prints the binary's path
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building cutover (cargo build --release --locked)"
        (cd "$REPO" && cargo build --release --locked >&2)
    fi
    local bin="${CARGO_TARGET_DIR:-$REPO/target}/release/cutover"
    [[ -x "$bin" ]] || die "no cutover binary at $bin"
    echo "$bin"
}

build_cutover_pgo() { # prints the binary's path
    if [[ -n "${PGO_BIN:-}" ]]; then
        [[ -x "$PGO_BIN" ]] || die "PGO_BIN=$PGO_BIN is not an executable"
        echo "$PGO_BIN"
        return
    fi
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building cutover with PGO (scripts/pgo-build.sh; about two release builds)"
        "$REPO/scripts/pgo-build.sh" >&2
    fi
    local bin="${PGO_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/pgo}/cutover"
    [[ -x "$bin" ]] || die "no PGO cutover binary at $bin"
    echo "$bin"
}

# One build, for instructions.sh: PGO=1 (the default) the PGO build, PGO=0
# the plain one. Sets CUTOVER_BIN and CUTOVER_BUILD.
build_cutover() {
    if [[ "${PGO:-1}" == 1 ]]; then
        CUTOVER_BUILD="PGO (scripts/pgo-build.sh)"
        CUTOVER_BIN="$(build_cutover_pgo)"
    else
        CUTOVER_BUILD="plain (cargo build --release)"
        CUTOVER_BIN="$(build_cutover_plain)"
    fi
    [[ -x "$CUTOVER_BIN" ]] || die "no cutover binary"
}

build_floor() { # sets FLOOR_BIN, INLINE_BIN, MAPS_BIN and RAW_BIN: the bare hyper proxy (what the stack itself costs), its inline-client variant, and without hyper's server: with header maps, and without
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building the floors (cargo build --release --locked --example hyper_floor --example inline_floor --example maps_floor --example raw_floor)"
        (cd "$REPO" && cargo build --release --locked --example hyper_floor --example inline_floor --example maps_floor --example raw_floor >&2)
    fi
    FLOOR_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/hyper_floor"
    INLINE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/inline_floor"
    MAPS_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/maps_floor"
    RAW_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/raw_floor"
    [[ -x "$FLOOR_BIN" ]] || die "no hyper_floor binary at $FLOOR_BIN"
    [[ -x "$INLINE_BIN" ]] || die "no inline_floor binary at $INLINE_BIN"
    [[ -x "$MAPS_BIN" ]] || die "no maps_floor binary at $MAPS_BIN"
    [[ -x "$RAW_BIN" ]] || die "no raw_floor binary at $RAW_BIN"
}

# --------------------------------------------------------------- configs --
render() {
    sed -e "s|@DIR@|$TMP|g" -e "s|@BACKEND@|$BACKEND|g" -e "s|@BACKEND_H2@|$BACKEND_H2|g" \
        -e "s|@NGINX@|$NGINX|g" -e "s|@NGINX_H2@|$NGINX_H2|g" \
        -e "s|@HAPROXY@|$HAPROXY|g" -e "s|@HAPROXY_H2@|$HAPROXY_H2|g" \
        -e "s|@BACKEND_STATUS@|$BACKEND_STATUS|g" -e "s|@CUTOVER@|$CUTOVER|g" -e "s|@CUTOVER_ADMIN@|$CUTOVER_ADMIN|g" "$HERE/$1" >"$TMP/$1"
}

prepare_tmp() { # name: makes TMP (/tmp/NAME.XXXXXX) and OUT, the backend's files, and renders the configs
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    TMP="$(mktemp -d "/tmp/$1.XXXXXX")"
    chmod 755 "$TMP"
    mkdir -p "$OUT" "$TMP/www" "$TMP/backend-tmp" "$TMP/nginx-proxy-tmp"
    head -c 16384 /dev/zero | tr '\0' 'x' >"$TMP/www/16k.bin"
    chmod 644 "$TMP/www/16k.bin"
    local f
    for f in backend-nginx.conf proxy-nginx.conf haproxy.cfg cutover.toml; do render "$f"; done
    # ACCESS_LOG=json|text: cutover logs every request, to show what logging costs
    if [[ -n "${ACCESS_LOG:-}" ]]; then
        printf '\n[access_log]\nto = "%s/access.log"\nformat = "%s"\n' "$TMP" "$ACCESS_LOG" >>"$TMP/cutover.toml"
    fi
    # the PGO build runs beside the plain one, on ports of its own
    sed -e "s|\"127.0.0.1:$CUTOVER\"|\"127.0.0.1:$CUTOVER_PGO\"|" -e "s|\"127.0.0.1:$CUTOVER_ADMIN\"|\"127.0.0.1:$CUTOVER_PGO_ADMIN\"|" \
        "$TMP/cutover.toml" >"$TMP/cutover-pgo.toml"
}

private_cutover_copy() { # run a private copy: a concurrent `cargo build` may replace the original mid-run
    cp "$CUTOVER_BIN" "$TMP/cutover"
    CUTOVER_BIN="$TMP/cutover"
    "$CUTOVER_BIN" check "$TMP/cutover.toml" >/dev/null
}

check_ports_free() {
    local port
    for port in $BACKEND $BACKEND_H2 $BACKEND_STATUS $CUTOVER_PGO $CUTOVER_PGO_ADMIN $NGINX $NGINX_H2 $HAPROXY $HAPROXY_H2 $CUTOVER $CUTOVER_ADMIN $MAPS $RAW $FLOOR $INLINE; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is already in use (set BASE_PORT)"; fi
    done
}
