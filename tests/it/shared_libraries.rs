//! The shared libraries a running `cutover` maps: not `libm.so`.
//!
//! The library's own math calls the `libm` crate, and the binary's link
//! sends tokio's one C `pow` call to Rust code (`__wrap_pow` in
//! `src/main.rs`, `--wrap=pow` in `build.rs`), so the dynamic loader never
//! maps libm at start. A dependency that calls a libm function, or a link
//! that loses the wrap, brings the mapping back, and this test says so.
//! It reads `/proc/PID/maps` of the real binary, started with two workers
//! (tokio's multi-thread scheduler, the one that calls `pow`) after it
//! has served requests, so the wrapped call has run too.

#![cfg(target_os = "linux")]

use crate::support;

use std::net::SocketAddr;

use support::process::Running;
use support::{exchange, Config, RawUpstream, Reply};

#[test]
fn a_running_proxy_does_not_map_libm() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let upstream = runtime.block_on(RawUpstream::always(Reply::close(&answer[..])));
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("cutover.toml");
    let config = Config::one_pool(&[upstream.addr]).server("workers = 2").build();
    std::fs::write(&path, config).expect("write the config");
    let mut running = Running::start(&path, &[]);
    let port = running.wait_for_port("serving traffic");

    let request = b"GET / HTTP/1.1\r\nHost: libs.test\r\nConnection: close\r\n\r\n";
    for _ in 0..3 {
        let out = runtime.block_on(exchange(SocketAddr::from(([127, 0, 0, 1], port)), request));
        assert_eq!(out.only().status, 200, "{}", out.raw);
    }

    let maps = std::fs::read_to_string(format!("/proc/{}/maps", running.child.id())).expect("read the proxy's maps");
    assert!(maps.contains("libc.so"), "the maps of a dynamically linked cutover name libc:\n{maps}");
    let libm: Vec<&str> = maps.lines().filter(|line| line.contains("libm.so")).collect();
    assert!(libm.is_empty(), "cutover maps libm:\n{}", libm.join("\n"));
}
