//! What the validation tests of every section share: a file name, a pool
//! and route that are valid, and assertions on the error's message and
//! `line:col`.

use std::path::Path;

use super::parse;
use crate::config::Config;

pub(super) const FILE: &str = "/etc/cutover/cutover.toml";

/// Two pools, lines 1-4.
pub(super) const POOLS: &str = r#"[pools.blue]
backends = ["127.0.0.1:9001"]
[pools.canary]
backends = ["127.0.0.1:9003"]
"#;

/// One route, three lines.
pub(super) const ROUTE: &str = r#"[[routes]]
name = "shop"
split = { blue = 90, canary = 10 }
"#;

pub(super) fn parse_ok(text: &str) -> Config {
    match parse(Path::new(FILE), text) {
        Ok(config) => config,
        Err(e) => panic!("unexpected error: {e}\n--- config ---\n{text}"),
    }
}

#[track_caller]
pub(super) fn assert_err(text: &str, needle: &str, position: (usize, usize)) {
    let e = match parse(Path::new(FILE), text) {
        Ok(_) => panic!("config should be rejected ({needle}):\n{text}"),
        Err(e) => e,
    };
    assert!(e.message.contains(needle), "message {:?} does not contain {:?}", e.message, needle);
    assert_eq!(e.position, Some(position), "position of {:?}", e.message);
    assert_eq!(e.path, Path::new(FILE));
}

/// `head` (the part under test) followed by valid pools and a route.
pub(super) fn with_server(head: &str) -> String {
    format!("{head}{POOLS}{ROUTE}")
}

/// Valid pools (lines 1-4) followed by `routes` from line 5.
pub(super) fn with_routes(routes: &str) -> String {
    format!("{POOLS}{routes}")
}

/// `pools` followed by a route over blue and canary.
pub(super) fn with_pools(pools: &str) -> String {
    format!("{pools}{ROUTE}")
}
