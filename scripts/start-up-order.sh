#!/usr/bin/env bash
# Writes link/start-up-order.txt afresh: the functions of the plain release
# binary that a started, idle proxy runs, in the order they first run. build.rs
# hands the list to lld (--symbol-ordering-file), which puts them together at
# the front of .text, so that start-up faults in a few code pages instead of
# most of the binary (build.rs says why that matters).
#
# Run it when the list has gone stale: after a toolchain or dependency
# update (symbol names carry hashes of both), or after start-up code changed.
# A stale list costs memory, never correctness: names not found are skipped.
#
# How: build the plain binary and the training driver, run the binary under
# valgrind's callgrind through what a proxy does before it sits idle
# (`pgo_training --start-up`: start, a few HTTP/1.1 and h2c requests, a
# metrics scrape, stop), and list every function of the binary it ran (the
# same step as scripts/pgo-build.sh's layout, on the plain build). Then the
# build is run again, so the binary is laid out from the new list.
#
# Usage: scripts/start-up-order.sh       # needs valgrind
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
LIST="$REPO/link/start-up-order.txt"

log() { printf '[start-up-order %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'start-up-order: error: %s\n' "$*" >&2; exit 1; }
command -v valgrind >/dev/null || die "needs valgrind (callgrind)"

# Two builds, the binary alone first: an example pulls in the
# dev-dependencies, whose features change the dependencies' symbol hashes,
# and the list must name the binary `cargo build --release` links.
log "building cutover (cargo build --release --bin cutover), then the training driver"
cargo build --release --locked --bin cutover

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$TARGET/release/cutover" "$work/cutover"
cargo build --release --locked --example pgo_training
log "running it under callgrind through start-up"
if ! "$TARGET/release/examples/pgo_training" --start-up valgrind --tool=callgrind --compress-strings=no --demangle=no \
    "--log-file=$work/valgrind.%p.log" "--callgrind-out-file=$work/callgrind.%p" "$work/cutover" 2>"$work/training.log"; then
    cat "$work"/training.log "$work"/valgrind.*.log >&2 || true
    die "the run under callgrind failed"
fi
# Every function with a cost of its own has an "fn=NAME" line after the
# "ob=PATH" of its object; the binary's are the ones to order. Addresses
# (functions without a symbol) and valgrind's "(below main)" name nothing
# the linker knows, nor does the "'2" callgrind adds to a function's name
# for its frames inside a recursion.
awk -v binary="$work/cutover" '/^ob=/ { ob = substr($0, 4) } /^fn=/ && ob == binary { print substr($0, 4) }' \
    "$work"/callgrind.* | sed "s/'[0-9]*$//" | awk '!seen[$0]++' | grep -v -E '^(0x[0-9a-f]+|\(below main\))$' >"$work/order.txt" || true
[[ -s "$work/order.txt" ]] || die "callgrind saw no function of cutover run"
mkdir -p "$(dirname "$LIST")"
cp "$work/order.txt" "$LIST"
log "wrote $(wc -l <"$LIST") functions to ${LIST#"$REPO"/}; linking again with them"
cargo build --release --locked --bin cutover
log "done: $TARGET/release/cutover"
