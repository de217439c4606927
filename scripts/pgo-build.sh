#!/usr/bin/env bash
# Builds the release binary with profile-guided optimisation (PGO), the way
# the container image is built. The result is target/pgo/cutover.
#
# Why: on the request path the PGO build executes fewer instructions than a
# plain `cargo build --release` (docs/performance.md has the current
# figures). The compiler learns from a real run which branches
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
#      component, added if missing: it must match rustc's LLVM), and build
#      cutover again with -Cprofile-use (target/pgo/use), each function's
#      never-trained blocks split off into a cold part of their own;
#   4. lay out the code: run that binary under valgrind's callgrind through
#      what a proxy does before it sits idle (`pgo_training --start-up`:
#      start, a few HTTP/1.1 and h2c requests, a metrics scrape, two seconds
#      idle, stop), and list every function and cold part it ran, then the
#      cold parts of those functions it did not run;
#   5. link it again with that list as lld's --symbol-ordering-file, and copy
#      it to target/pgo/cutover.
# Why step 4: the functions a started, idle proxy has run then sit together
# at the front of .text instead of spread over its 5 MiB, so far fewer code
# pages are faulted in (the kernel maps the 64 KiB around each fault).
# build.rs packs the relative relocations (-z pack-relative-relocs), as
# for the plain build, so the dynamic loader reads a few KiB of them
# instead of hundreds. Together they lower the RSS right after start
# (docs/performance.md); the code and the instructions per request are
# the same. The list must come from the optimised binary itself: a profile
# names the functions of the instrumented one, which inlines differently,
# and that list laid out half a megabyte of code start-up never runs.
# The layout needs lld (Rust's default linker on x86_64 Linux), and
# valgrind for the list (and perl to read it); without them (a test link
# and `command -v` decide), or if the run under callgrind fails, the build
# goes on without that part and says so. Whether the relocations are
# packed, build.rs decides by a probe of its own.
# It takes about two plain release builds plus two minutes; nothing but
# the Rust toolchain (and rustup, for llvm-tools) is needed, and valgrind
# and perl (in every Debian) for the layout.
#
# Usage: scripts/pgo-build.sh            # from anywhere in the repository
# Environment:
#   PGO_DIR=target/pgo   where the builds, the profile and the binary go
#                        (under CARGO_TARGET_DIR when that is set)
#   RUSTFLAGS            kept; the PGO flags are added to it
#   PGO_LAYOUT=0         skip the code layout (steps 4 and 5, and the packed
#                        relocations)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
PGO_DIR="${PGO_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/pgo}"
mkdir -p "$PGO_DIR"
PGO_DIR="$(cd "$PGO_DIR" && pwd)"   # -Cprofile-use needs an absolute path
PROFILES="$PGO_DIR/profiles"
PROFDATA="$PGO_DIR/cutover.profdata"
LAYOUT="$PGO_DIR/layout"

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

# Whether this toolchain's linker takes the layout options and a binary
# linked with them runs here.
layout_links() {
    local dir ok=0
    dir="$(mktemp -d)"
    : >"$dir/order.txt"
    printf 'fn main() { let v: Vec<Box<dyn std::fmt::Debug>> = vec![Box::new(1)]; println!("{v:?}"); }\n' >"$dir/probe.rs"
    if rustc -O "-Clink-arg=-Wl,--symbol-ordering-file=$dir/order.txt" -Clink-arg=-Wl,--no-warn-symbol-ordering \
        -o "$dir/probe" "$dir/probe.rs" 2>"$dir/err" &&
        "$dir/probe" >/dev/null 2>&1; then
        ok=1
    else
        log "the linker cannot lay out the code (not lld): building without it"
        sed 's/^/    /' "$dir/err" >&2
    fi
    rm -rf "$dir"
    [[ $ok == 1 ]]
}

# Step 4: the functions of cutover that a started, idle proxy runs, in the
# order they first run, into $LAYOUT/order.txt. Fails if callgrind cannot
# run it.
start_up_functions() {
    mkdir -p "$LAYOUT"
    cp "$built" "$LAYOUT/cutover"
    if ! "$training" --start-up valgrind --tool=callgrind --compress-strings=no --compress-pos=no --dump-instr=yes \
        --demangle=no "--log-file=$LAYOUT/valgrind.%p.log" "--callgrind-out-file=$LAYOUT/callgrind.%p" "$LAYOUT/cutover" \
        2>"$LAYOUT/training.log"; then
        local log_file
        for log_file in "$LAYOUT"/training.log "$LAYOUT"/valgrind.*.log; do
            [[ -f "$log_file" ]] && sed 's/^/    /' "$log_file" >&2
        done
        return 1
    fi
    # Every instruction of the binary that ran has an address line ("0x...")
    # after the "ob=PATH" of its object. Each address is taken to the symbol
    # that holds it (nm), so that the cold part of a split function
    # ("NAME.cold"), which callgrind counts under its parent's name, is
    # listed under its own. After the symbols that ran come the cold parts of
    # the functions that ran which did not run themselves: blocks no training
    # took, which a proxy with another config or other peers may take at
    # start, better next to start-up than spread over the binary. Perl, not
    # awk: mawk reads no hexadecimal (and perl is in every Debian).
    perl -e '
        my ($binary, @files) = @ARGV;
        open(my $nm, "-|", "nm", "-S", "--defined-only", $binary) or die "nm: $!";
        my @syms;
        while (<$nm>) {
            my @f = split;
            if (@f == 4 && $f[2] =~ /^[tTwW]$/) { push @syms, [hex $f[0], hex $f[1], $f[3]] }
            elsif (@f == 3 && $f[1] =~ /^[tT]$/) { push @syms, [hex $f[0], 0, $f[2]] }
        }
        close($nm) or die "nm failed";
        @syms = sort { $a->[0] <=> $b->[0] } @syms;
        # A symbol without a size (the C runtime'"'"'s) reaches to the next.
        for my $i (0 .. $#syms) { $syms[$i][1] ||= $i < $#syms ? $syms[$i + 1][0] - $syms[$i][0] : 1 }
        my (%ran, @order);
        for my $file (@files) {
            open(my $in, "<", $file) or die "$file: $!";
            my $ob = "";
            while (<$in>) {
                if (/^ob=(.*)/) { $ob = $1; next }
                next unless $ob eq $binary && /^0x([0-9a-f]+)/;
                my $address = hex $1;
                my ($lo, $hi) = (0, $#syms);
                while ($lo < $hi) { my $mid = ($lo + $hi + 1) >> 1; if ($syms[$mid][0] <= $address) { $lo = $mid } else { $hi = $mid - 1 } }
                my $sym = $syms[$lo];
                next unless $sym && $sym->[0] <= $address && $address < $sym->[0] + $sym->[1];
                push @order, $sym->[2] unless $ran{$sym->[2]}++;
            }
        }
        my @cold = grep { /^(.*)\.cold$/ && !$ran{$_} && $ran{$1} } map { $_->[2] } @syms;
        print "$_\n" for @order, @cold;
    ' "$LAYOUT/cutover" "$LAYOUT"/callgrind.* >"$LAYOUT/order.txt"
    [[ -s "$LAYOUT/order.txt" ]] || { log "callgrind saw no function of cutover run"; return 1; }
}

layout=0
if [[ "${PGO_LAYOUT:-1}" != 0 ]] && layout_links; then
    if command -v valgrind >/dev/null && command -v perl >/dev/null; then
        layout=1
    else
        log "no valgrind or no perl: building without the code layout (idle RSS about 1.5 MiB higher)"
    fi
fi

log "1/5 building the training driver (plain) and the instrumented cutover"
cargo build --release --locked --example pgo_training
# The PGO builds keep ThinLTO, where the plain build is fat (Cargo.toml):
# the profile already inlines across crates by heat, fat LTO on top of it
# ran more instructions and made 27 % more text (benches/load/NOTES.md),
# and this build's layout comes from its own binary, so the checkout-bound
# names ThinLTO gives promoted functions do not matter here.
export CARGO_PROFILE_RELEASE_LTO=thin
# build.rs lays out a plain build from link/start-up-order.txt; this build
# is laid out from a list of its own (step 4), so its builds tell build.rs
# to leave that list out (the training driver's build, in the plain target
# dir, does not, so that the plain build there is not redone).
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES" CUTOVER_SYMBOL_ORDER="" \
    cargo build --release --locked --bin cutover --target-dir "$PGO_DIR/generate"
# Emptied only now: the build scripts that just ran were instrumented too,
# and wrote their own profiles here.
rm -rf "$PROFILES" "$PROFDATA" "$LAYOUT" "$PGO_DIR"/symbol-order-*.txt
training="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/pgo_training"

log "2/5 training: real traffic through the instrumented binary"
"$training" "$PGO_DIR/generate/release/cutover"

log "3/5 merging the profiles and building cutover with them"
compgen -G "$PROFILES/*.profraw" >/dev/null || die "the training run wrote no profile into $PROFILES"
"$llvm_profdata" merge -o "$PROFDATA" "$PROFILES"
# Steps 3 and 5 build with the same flags: that is what keeps the code and
# the symbol names of step 3's binary, which the order names.
use_flags="${RUSTFLAGS:-} -Cprofile-use=$PROFDATA"
# With the layout, the blocks of each function that no training run took go
# to a part of their own ("NAME.cold"; LLVM's machine function splitter,
# with only never-run blocks counted cold: -mfs-psi-cutoff=0; the default
# counts blocks run once as cold too, and start-up runs most of its blocks
# once). Start-up's functions are big and run few of their blocks, so split,
# what start-up runs takes far less room at the front of .text; the request
# path runs the same instructions. Without the layout the cold parts would
# land wherever the linker puts them, so there is no split then.
if [[ $layout == 1 ]]; then
    use_flags="$use_flags -Cllvm-args=-enable-split-machine-functions -Cllvm-args=-mfs-psi-cutoff=0"
fi
RUSTFLAGS="$use_flags" CUTOVER_SYMBOL_ORDER="" cargo build --release --locked --bin cutover --target-dir "$PGO_DIR/use"
built="$PGO_DIR/use/release/cutover"

if [[ $layout == 1 ]]; then
    log "4/5 code layout: the functions a started, idle proxy runs (callgrind)"
    if start_up_functions; then
        # Named by its checksum, so that cargo links again whenever it changes.
        order="$PGO_DIR/symbol-order-$(cksum <"$LAYOUT/order.txt" | cut -d' ' -f1).txt"
        cp "$LAYOUT/order.txt" "$order"
        log "5/5 linking again with $(wc -l <"$order") functions first"
        # The same profile and flags give the same code and symbols; only the
        # order of the functions in .text changes. An ordering file switches
        # off lld's call-graph sort, which packs the hot functions the profile
        # names; CPU per request at a fixed rate measured the same both ways,
        # and so it did with the most called functions first (which kept
        # 0.3 MiB more resident at idle than this first-run-first order).
        RUSTFLAGS="$use_flags" CUTOVER_SYMBOL_ORDER="" cargo rustc --release --locked --bin cutover --target-dir "$PGO_DIR/use" -- \
            "-Clink-arg=-Wl,--symbol-ordering-file=$order" -Clink-arg=-Wl,--no-warn-symbol-ordering
    else
        # A layout is worth 1.5 MiB, not a failed build.
        log "no list of start-up functions (see above): building without the code layout"
    fi
else
    log "4/5, 5/5 code layout skipped"
fi
cp "$built" "$PGO_DIR/cutover"
"$PGO_DIR/cutover" --version >/dev/null
log "done: $PGO_DIR/cutover"
