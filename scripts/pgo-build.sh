#!/usr/bin/env bash
# Builds the release binary with profile-guided optimisation (PGO), the way
# the container image is built. The result is target/pgo/cutover.
#
# Why: on the benchmark's request path the PGO build executes about a
# quarter fewer instructions than a plain `cargo build --release` (see
# docs/performance.md). The compiler learns from a real run which branches
# are taken, what to inline and which code is cold; the cold code is laid
# out apart from the hot, which also keeps fewer code pages resident.
#
# How (what rustc's own release builds do):
#   1. build cutover with -Cprofile-generate (target/pgo/generate);
#   2. run examples/pgo_training.rs against it: real traffic through the
#      instrumented binary (keep-alive HTTP/1.1 through a guarded split, 16 KiB
#      bodies, uploads, h2c, a sticky route, an h2 upstream, the admin API, a
#      reload, SIGTERM), once with `workers = 1` and once multi-threaded;
#   3. merge the raw profiles with llvm-profdata (rustup's llvm-tools
#      component, added if missing: it must match rustc's LLVM);
#   4. build cutover again with -Cprofile-use (target/pgo/use) and copy it to
#      target/pgo/cutover.
# It takes about two plain release builds plus half a minute; nothing but
# the Rust toolchain (and rustup, for llvm-tools) is needed.
#
# Usage: scripts/pgo-build.sh            # from anywhere in the repository
# Environment:
#   PGO_DIR=target/pgo   where the builds, the profile and the binary go
#                        (under CARGO_TARGET_DIR when that is set)
#   RUSTFLAGS            kept; the PGO flags are added to it
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
PGO_DIR="${PGO_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/pgo}"
mkdir -p "$PGO_DIR"
PGO_DIR="$(cd "$PGO_DIR" && pwd)"   # -Cprofile-use needs an absolute path
PROFILES="$PGO_DIR/profiles"
PROFDATA="$PGO_DIR/cutover.profdata"

log() { printf '[pgo-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'pgo-build: error: %s\n' "$*" >&2; exit 1; }

host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x "$llvm_profdata" ]]; then
    command -v rustup >/dev/null || die "llvm-profdata is missing and there is no rustup to add llvm-tools"
    log "adding rustup's llvm-tools component (llvm-profdata)"
    rustup component add llvm-tools
fi
[[ -x "$llvm_profdata" ]] || die "no llvm-profdata at $llvm_profdata"

log "1/4 building the training driver (plain) and the instrumented cutover"
cargo build --release --locked --example pgo_training
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES" \
    cargo build --release --locked --bin cutover --target-dir "$PGO_DIR/generate"
# Emptied only now: the build scripts that just ran were instrumented too,
# and wrote their own profiles here.
rm -rf "$PROFILES" "$PROFDATA"

log "2/4 training: real traffic through the instrumented binary"
"${CARGO_TARGET_DIR:-$REPO/target}/release/examples/pgo_training" "$PGO_DIR/generate/release/cutover"

log "3/4 merging the profiles"
compgen -G "$PROFILES/*.profraw" >/dev/null || die "the training run wrote no profile into $PROFILES"
"$llvm_profdata" merge -o "$PROFDATA" "$PROFILES"

log "4/4 building cutover with the profile"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFDATA" \
    cargo build --release --locked --bin cutover --target-dir "$PGO_DIR/use"
cp "$PGO_DIR/use/release/cutover" "$PGO_DIR/cutover"
"$PGO_DIR/cutover" --version >/dev/null
log "done: $PGO_DIR/cutover"
