//! The build `cargo build --release` makes stays under 8 MiB resident
//! once started and idle (`docs/performance.md`, "Idle RSS").
//!
//! Most of an idle proxy's RSS is code pages, faulted in by what start-up
//! runs; the link groups those functions (`link/start-up-order.txt`,
//! `build.rs`). A list gone stale, a dependency that faults in more code at
//! start, or a link that loses the grouping raises it, and only a release
//! binary shows it. So this test needs one: `CUTOVER_RELEASE_BIN` names
//! it, as `.ci/run` sets it after `cargo build --release --locked`.
//! Without it the test says it skipped, unless `CI` is `true`.
//!
//! The binary is copied first, as an install or an image layer copies it:
//! how much of a file one page fault maps depends on how the file was
//! written. It is started with one worker, serves a few requests
//! (HTTP/1.1 and h2c), and its `VmRSS` is read once they are answered.
//! A second test reads the same binary's section table: the one byte of
//! read-only data `main` reads at every start sits beside the ELF headers.

#![cfg(target_os = "linux")]

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::process::Running;
use support::{exchange, Config, RawUpstream, DEADLINE};
use tokio::time::timeout;

/// The goal for the plain release build (issue 27).
const LIMIT_KIB: u64 = 8 * 1024;

/// The release binary to measure, if one is named.
fn release_binary() -> Option<PathBuf> {
    match std::env::var_os("CUTOVER_RELEASE_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI is true, but CUTOVER_RELEASE_BIN names no release binary to measure"
            );
            eprintln!(
                "note: skipped: set CUTOVER_RELEASE_BIN to a `cargo build --release` binary to measure its idle RSS"
            );
            None
        }
    }
}

/// The status of one h2c (prior knowledge) GET to `addr`.
async fn h2c_get(addr: SocketAddr) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to proxy");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(conn);
    let request = Request::get("http://rss.test/h2").body(Full::new(Bytes::new())).expect("request");
    let response =
        timeout(DEADLINE, sender.send_request(request)).await.expect("h2 answer in time").expect("h2 answer");
    response.status().as_u16()
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the proxy's status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

#[test]
fn a_started_idle_release_build_stays_under_8_mib() {
    let Some(binary) = release_binary() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let copy = dir.path().join("cutover");
    std::fs::copy(&binary, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let upstream = runtime.block_on(RawUpstream::ok());
    let config_path = dir.path().join("cutover.toml");
    std::fs::write(&config_path, Config::one_pool(&[upstream.addr]).server("workers = 1").build())
        .expect("write the config");
    let mut running = Running::start_binary(&copy, &config_path, &[]);
    let port = running.wait_for_port("serving traffic");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    for request in [
        &b"GET / HTTP/1.1\r\nHost: rss.test\r\nConnection: close\r\n\r\n"[..],
        b"GET /a?b=c HTTP/1.1\r\nHost: rss.test\r\nConnection: close\r\n\r\n",
    ] {
        let out = runtime.block_on(exchange(addr, request));
        assert_eq!(out.only().status, 200, "{}", out.raw);
    }
    assert_eq!(runtime.block_on(h2c_get(addr)), 200);

    let rss = rss_kib(running.child.id());
    eprintln!("idle RSS of {}: {rss} KiB (limit {LIMIT_KIB})", binary.display());
    assert!(
        rss < LIMIT_KIB,
        "the release build idles at {rss} KiB, over the {LIMIT_KIB} KiB goal; a build whose symbols \
         link/start-up-order.txt no longer names (another toolchain, a dependency or feature changed) \
         idles near 9 MiB: run scripts/start-up-order.sh and commit the list"
    );
}

/// The file offset and size of each named section of the ELF64
/// (little-endian) file `elf`.
fn sections(elf: &[u8]) -> Vec<(String, u64, u64)> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().expect("two bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("four bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("eight bytes"));
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "an ELF64 little-endian file");
    let (table, entry) = (u64_at(0x28) as usize, u16_at(0x3a) as usize);
    let (count, names) = (u16_at(0x3c) as usize, u16_at(0x3e) as usize);
    let header = |index: usize| table + index * entry;
    let strings = u64_at(header(names) + 24) as usize;
    (0..count)
        .map(|index| {
            let at = header(index);
            let name = String::from_utf8_lossy(string_at(elf, strings + u32_at(at) as usize)).into_owned();
            (name, u64_at(at + 24), u64_at(at + 32))
        })
        .collect()
}

/// The NUL-terminated string of an ELF string table that starts at `at`.
fn string_at(elf: &[u8], at: usize) -> &[u8] {
    let rest = &elf[at..];
    &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
}

/// The file offset and size of the section `name`, if there is one.
fn section(sections: &[(String, u64, u64)], name: &str) -> Option<(u64, u64)> {
    sections.iter().find(|(n, _, _)| n == name).map(|&(_, offset, size)| (offset, size))
}

/// The whole file `binary`.
fn read(binary: &std::path::Path) -> Vec<u8> {
    std::fs::read(binary).unwrap_or_else(|e| panic!("read {}: {e}", binary.display()))
}

/// `main` reads one byte of `.debug_gdb_scripts` at every start (rustc's
/// way of keeping the section in builds with debug info). The link puts it
/// in the first 64 KiB of the file, beside the ELF headers the loader
/// reads anyway (`link/gdb-scripts-first.ld`), so that the read faults in
/// no window of pages of its own.
#[test]
fn the_release_build_keeps_the_byte_main_reads_beside_the_elf_headers() {
    let Some(binary) = release_binary() else { return };
    let elf = read(&binary);
    let sections = sections(&elf);
    let (offset, size) =
        section(&sections, ".debug_gdb_scripts").expect("a release build with debug info has .debug_gdb_scripts");
    let (rodata, _) = section(&sections, ".rodata").expect("a .rodata section");
    assert!(
        offset < rodata && offset + size <= 64 * 1024,
        ".debug_gdb_scripts at file offset {offset:#x} (.rodata at {rodata:#x}): the link did not put it beside the \
         ELF headers (build.rs's probe of link/gdb-scripts-first.ld failed?)"
    );
}

/// The names in the ELF64 file `elf`'s symbol table (`.symtab`).
fn symbol_names(elf: &[u8]) -> std::collections::HashSet<&[u8]> {
    let sections = sections(elf);
    let (table, size) = section(&sections, ".symtab").expect("a release build keeps its symbol table (.symtab)");
    let (strings, _) = section(&sections, ".strtab").expect("a .strtab section");
    let (table, size, strings) = (table as usize, size as usize, strings as usize);
    elf[table..table + size]
        .chunks_exact(24)
        .map(|entry| string_at(elf, strings + u32::from_le_bytes(entry[..4].try_into().expect("four bytes")) as usize))
        .filter(|name| !name.is_empty())
        .collect()
}

/// Every function `link/start-up-order.txt` names is in the binary. The
/// names carry hashes of the toolchain, the dependencies and their
/// features (and, under ThinLTO, of the checkout's path: hence the release
/// profile's fat LTO), so any change to those leaves names the link cannot find; it
/// skips them silently, and the functions they named land wherever the
/// rest of the code is. A list that misses a few percent of its names
/// still idles under 8 MiB but above what the docs say (a stale list
/// missing 4 % of them idled 1.3 MiB higher), so the first test alone would
/// not notice.
#[test]
fn the_start_up_list_names_only_functions_the_release_build_has() {
    let Some(binary) = release_binary() else { return };
    let elf = read(&binary);
    let symbols = symbol_names(&elf);
    let list_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("link/start-up-order.txt");
    let list = std::fs::read_to_string(&list_path).unwrap_or_else(|e| panic!("read {}: {e}", list_path.display()));
    let names: Vec<&str> = list.lines().filter(|line| !line.is_empty()).collect();
    assert!(names.len() > 100, "{} names only: not a start-up list", names.len());
    let missing: Vec<&str> = names.iter().copied().filter(|name| !symbols.contains(name.as_bytes())).collect();
    assert!(
        missing.is_empty(),
        "{} of the {} functions link/start-up-order.txt names are not in {} (another toolchain, or a \
         dependency, a feature or vendored code changed), so the link scatters them and idle RSS grows: \
         run scripts/start-up-order.sh and commit the list. The first missing: {:?}",
        missing.len(),
        names.len(),
        binary.display(),
        &missing[..missing.len().min(5)]
    );
}
