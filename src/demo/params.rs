//! The demo's fixed parameters: its pools and route, the load it sends,
//! and how badly the canary fails. The story and the display are written
//! for these values.

use std::time::Duration;

/// The demo's pools, in display order.
pub(super) const POOLS: [&str; 3] = ["blue", "green", "canary"];
/// The route the demo config declares.
pub(super) const ROUTE: &str = "shop";
/// Concurrent clients of the load loop.
pub(super) const WORKERS: u32 = 4;
/// Requests per second, all workers together.
pub(super) const RATE: u32 = 200;
/// Share of the canary's requests that fail once it goes bad: 3 in 10.
pub(super) const FAIL_EVERY: (u64, u64) = (3, 10);
/// Green's guard's `max_error_rate`.
pub(super) const MAX_ERROR_RATE: f64 = 0.05;
/// Longest wait for one admin call or one proxied request.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
