//! cutover's integration tests: one module per behaviour, all in one test
//! binary.
//!
//! One binary, not one per file: every test binary links the whole proxy
//! and its dependencies again, and cargo runs test binaries one after
//! another, so the slowest test at the end of each binary would leave the
//! other test threads idle. One binary links once and keeps every test
//! thread busy until the last test ends.
//!
//! Run one module's tests with its path as the filter:
//! `cargo test --test it hostile::` (the trailing `::` keeps `fleet::` from
//! also matching `fleet_secure::` and the other `fleet_*` modules).
//! [`support`] is the one harness every module uses.

mod support;

mod access_log;
mod admin_browser;
mod admin_limits;
mod cli;
mod completions;
mod console;
mod console_cli;
mod demo;
mod deploy;
mod differential;
mod docs;
mod early_answer;
mod errors;
mod fleet;
mod fleet_etcd;
mod fleet_handover;
mod fleet_secure;
mod fleet_verdict;
mod forwarding;
mod grpc;
mod guard;
mod h2_preface;
mod health;
mod hostile;
mod hyper_reads;
mod idle_rss;
mod idle_wake;
mod judgement;
mod mirror;
mod pool_spread;
mod reload;
mod rollout;
mod schema;
mod shared_libraries;
mod shutdown;
mod slow_start;
mod split;
mod systemd;
mod tls;
mod underscore_headers;
mod upstream_content_length;
mod upstream_framing;
mod upstream_h2;
mod upstream_retry;
mod websocket;
