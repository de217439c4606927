#!/usr/bin/env bash
# HTTP/2 conformance: h2spec (github.com/summerwind/h2spec) against a freshly
# built cutover, over h2c (prior knowledge, on the plain listener) and over
# TLS (ALPN h2, a self-signed certificate, `h2spec -t -k`), with a tiny
# HTTP/1.1 backend (python3's http.server) behind it. Prints each mode's
# summary line and exits 0 only when both pass every case.
#
# h2spec is Go, so this is not part of `cargo test` or CI. It builds without
# a network: in GOPATH mode, from an h2spec source checkout and a GOPATH
# tree holding its dependencies (fatih/color, spf13/cobra, spf13/pflag,
# inconshreveable/mousetrap, mattn/go-colorable, mattn/go-isatty,
# golang.org/x/net, golang.org/x/sys). Debian's packages provide the tree:
#   apt-get install golang-go golang-golang-x-net-dev golang-golang-x-sys-dev \
#     golang-github-spf13-cobra-dev golang-github-spf13-pflag-dev \
#     golang-github-fatih-color-dev golang-github-mattn-go-colorable-dev \
#     golang-github-mattn-go-isatty-dev golang-github-inconshreveable-mousetrap-dev
# (they land in /usr/share/gocode/src). Any other copies laid out as
# DIR/src/<import path> work the same way.
#
# Run:
#   benches/conformance/h2spec.sh /path/to/h2spec-checkout
# Settings (environment):
#   H2SPEC_SRC=dir     the h2spec checkout (or the first argument)
#   GO_DEPS=dir        GOPATH tree with the dependencies (default /usr/share/gocode)
#   H2SPEC_BIN=path    an h2spec binary to use instead of building one
#   H2SPEC_TIMEOUT=3   seconds h2spec waits for each answer
#   CUTOVER_BIN=path   skip the cargo build and use this binary
#   OUT=dir            where the reports go (default /tmp/cutover-h2spec-<time>)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
H2SPEC_SRC="${H2SPEC_SRC:-${1:-}}"
GO_DEPS="${GO_DEPS:-/usr/share/gocode}"
H2SPEC_TIMEOUT="${H2SPEC_TIMEOUT:-3}"
OUT="${OUT:-/tmp/cutover-h2spec-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

# Wait up to 20 s for a line matching $2 in file $1; print the line.
wait_for_line() {
    local file="$1" pattern="$2" line
    for _ in $(seq 200); do
        line="$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            printf '%s\n' "$line"
            return 0
        fi
        sleep 0.1
    done
    log "no line matching '$pattern' in $file:"
    cat "$file" >&2
    return 1
}

# ---------------------------------------------------------------- h2spec --
if [ -n "${H2SPEC_BIN:-}" ]; then
    H2SPEC="$H2SPEC_BIN"
    H2SPEC_VERSION="$("$H2SPEC" --version | head -n1)"
else
    if [ -z "$H2SPEC_SRC" ] || [ ! -d "$H2SPEC_SRC/cmd/h2spec" ]; then
        log "usage: $0 H2SPEC_SOURCE_DIR   (or set H2SPEC_SRC, or H2SPEC_BIN)"
        exit 2
    fi
    command -v go >/dev/null || { log "go is not installed (Debian: golang-go)"; exit 2; }
    describe="$(git -C "$H2SPEC_SRC" describe --tags --always 2>/dev/null || echo unknown)"
    commit="$(git -C "$H2SPEC_SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    # GOPATH mode: the checkout at its import path beside the dependencies,
    # no module download, no checksum database.
    mkdir -p "$WORK/gopath/src/github.com/summerwind"
    cp -r "$H2SPEC_SRC" "$WORK/gopath/src/github.com/summerwind/h2spec"
    log "building h2spec $describe from $H2SPEC_SRC with dependencies from $GO_DEPS"
    (
        cd "$WORK/gopath/src/github.com/summerwind/h2spec"
        GO111MODULE=off GOPATH="$WORK/gopath:$GO_DEPS" GOCACHE="$WORK/gocache" GOFLAGS= GOPROXY=off \
            go build -o "$WORK/h2spec" -ldflags "-X main.VERSION=$describe -X main.COMMIT=$commit" ./cmd/h2spec
    )
    H2SPEC="$WORK/h2spec"
    H2SPEC_VERSION="h2spec $describe ($commit)"
fi

# --------------------------------------------------------------- cutover --
if [ -z "${CUTOVER_BIN:-}" ]; then
    log "building cutover (release)"
    (cd "$REPO" && cargo build --release --bin cutover >&2)
    CUTOVER_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/cutover"
fi

# ---------------------------------------------------------------- set up --
# Every listener on port 0; the ports are read from what each process logs.
mkdir -p "$WORK/www"
echo "hello from the h2spec backend" >"$WORK/www/index.html"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" >"$OUT/backend.log" 2>&1 &
PIDS+=("$!")
backend_port="$(wait_for_line "$OUT/backend.log" 'port [0-9]+' | sed -E 's/.*port ([0-9]+).*/\1/')"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
cat >"$WORK/cutover.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]

[server.tls]
listen = "127.0.0.1:0"
cert = "tls.crt"
key = "tls.key"

[admin]
listen = "127.0.0.1:0"

[pools.app]
backends = ["127.0.0.1:$backend_port"]

[[routes]]
name = "app"
split = { app = 100 }
EOF
RUST_LOG=info NO_COLOR=1 "$CUTOVER_BIN" run --config "$WORK/cutover.toml" >"$OUT/cutover.log" 2>&1 &
PIDS+=("$!")
port_of() { wait_for_line "$OUT/cutover.log" "$1" | sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/'; }
h2c_port="$(port_of 'serving traffic')"
tls_port="$(port_of 'serving HTTPS')"
port_of 'serving admin API' >/dev/null

# ------------------------------------------------------------------- run --
log "$H2SPEC_VERSION against $("$CUTOVER_BIN" --version 2>/dev/null || echo cutover)"
status=0
run_mode() {
    local mode="$1"
    shift
    local report="$OUT/h2spec-$mode.txt"
    "$H2SPEC" -h 127.0.0.1 -o "$H2SPEC_TIMEOUT" "$@" >"$report" 2>&1 || true
    local summary
    summary="$(grep -E '^[0-9]+ tests, ' "$report" | tail -n1)"
    printf '%-4s %s\n' "$mode:" "${summary:-no summary (see $report)}"
    if [ -z "$summary" ] || ! grep -qE ' 0 failed$' <<<"$summary" || grep -qE ' [1-9][0-9]* skipped' <<<"$summary"; then
        sed -n '/^Failures:/,/^Finished/p' "$report"
        status=1
    fi
}
run_mode h2c -p "$h2c_port"
run_mode tls -p "$tls_port" -t -k
log "reports in $OUT"
exit "$status"
