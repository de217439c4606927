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
    assert!(rss < LIMIT_KIB, "the release build idles at {rss} KiB, over the {LIMIT_KIB} KiB goal");
}
