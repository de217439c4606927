//! Link options for the `cutover` binary that keep what a started, idle
//! proxy has resident small, for the plain `cargo build --release` as for
//! the PGO build: packed relative relocations (`-z pack-relative-relocs`:
//! the loader reads a few KiB of them instead of a few hundred), and the
//! functions start-up runs placed together at the front of `.text`
//! (`link/start-up-order.txt`, lld's `--symbol-ordering-file`). The kernel
//! maps a whole page-cache folio, up to 2 MiB of a freshly copied binary,
//! on each page fault, so start-up code spread over `.text` keeps nearly all
//! of it resident, and grouped it keeps a fraction. The section `main`
//! reads one byte of at start (`.debug_gdb_scripts`, in any build with debug
//! info) is moved next to the ELF headers (`link/gdb-scripts-first.ld`), so
//! that the read does not fault in pages of exception tables nothing else
//! touches. And `--wrap=pow`: tokio's one call into libm goes to Rust code
//! in the binary (`__wrap_pow`, src/main.rs), so the binary does not need
//! `libm.so` and the loader does not map it at start.
//!
//! `--wrap` is used on every Linux GNU target: every ELF linker has it.
//! The other three are used only when a probe program linked with them by
//! this toolchain's linker runs on this machine (packed relocations need lld
//! or GNU ld 2.38 or later, and glibc 2.36 or later; the ordering needs lld;
//! moving the section needs a linker that reads `INSERT` commands),
//! and only for a native build; otherwise the build goes on without it. The
//! list names mangled symbols: names it does not find (another toolchain,
//! other dependency versions, code changed since) are skipped, and what is
//! left still groups. A build of the same tree in another directory finds
//! every name only because the release profile uses fat LTO (Cargo.toml
//! says why). `scripts/start-up-order.sh` writes it afresh.
//!
//! `CUTOVER_SYMBOL_ORDER` overrides the list's path (empty: no ordering);
//! `scripts/pgo-build.sh` empties it and lays out the PGO build from a list
//! of its own.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CUTOVER_SYMBOL_ORDER");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");

    let native = env::var("TARGET").ok() == env::var("HOST").ok();
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu {
        return;
    }
    // Every `pow` the binary's objects call (tokio's) goes to `__wrap_pow`
    // in src/main.rs, so nothing needs libm and `libm.so.6` is not linked.
    println!("cargo::rustc-link-arg-bins=-Wl,--wrap=pow");
    if !native {
        return;
    }
    let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else { return };

    let relocs = ["-Wl,-z,pack-relative-relocs"];
    if probe(&out, "relocs", &relocs) {
        for arg in relocs {
            println!("cargo::rustc-link-arg-bins={arg}");
        }
    }

    let manifest = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let gdb_scripts = manifest.join("link/gdb-scripts-first.ld");
    println!("cargo::rerun-if-changed={}", gdb_scripts.display());
    let script = format!("-Wl,-T,{}", gdb_scripts.display());
    if gdb_scripts.is_file() && probe(&out, "gdb-scripts", &[&script]) {
        println!("cargo::rustc-link-arg-bins={script}");
    }

    let order = match env::var_os("CUTOVER_SYMBOL_ORDER") {
        Some(path) if path.is_empty() => return,
        Some(path) => PathBuf::from(path),
        None => manifest.join("link/start-up-order.txt"),
    };
    println!("cargo::rerun-if-changed={}", order.display());
    if !order.is_file() {
        return;
    }
    let ordering = [format!("-Wl,--symbol-ordering-file={}", order.display()), "-Wl,--no-warn-symbol-ordering".into()];
    if probe(&out, "order", &ordering) {
        for arg in &ordering {
            println!("cargo::rustc-link-arg-bins={arg}");
        }
    }
}

/// Whether a small program linked with `link_args` (and the flags and
/// linker this build uses) links and runs here.
fn probe(out: &Path, name: &str, link_args: &[impl AsRef<str>]) -> bool {
    let dir = out.join(format!("probe-{name}"));
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let src = dir.join("probe.rs");
    let program = "fn main() { let v: Vec<Box<dyn std::fmt::Debug>> = vec![Box::new(1)]; println!(\"{v:?}\"); }\n";
    if std::fs::write(&src, program).is_err() {
        return false;
    }
    let exe = dir.join("probe");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    // With debug info, as the release profile builds: that is what puts a
    // `.debug_gdb_scripts` section in the probe for the linker script to move.
    cmd.arg("-O").arg("-g").arg("-o").arg(&exe).arg(&src);
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut arg = std::ffi::OsString::from("linker=");
            arg.push(linker);
            arg
        });
    }
    // The build's own flags choose the linker and its flavour; profile
    // flags are left out, a probe has no profile.
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        let mut flags = flags.split('\x1f').filter(|f| !f.is_empty()).peekable();
        while let Some(flag) = flags.next() {
            if flag == "-C" && flags.peek().is_some_and(|next| next.starts_with("profile-")) {
                flags.next();
            } else if !flag.starts_with("-Cprofile-") {
                cmd.arg(flag);
            }
        }
    }
    for arg in link_args {
        cmd.arg(format!("-Clink-arg={}", arg.as_ref()));
    }
    let linked = cmd.output().map(|o| o.status.success()).unwrap_or(false);
    linked && Command::new(&exe).output().map(|o| o.status.success()).unwrap_or(false)
}
