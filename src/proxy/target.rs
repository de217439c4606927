//! What the request path carries from step to step: what the proxy knows
//! of the client's connection ([`ConnInfo`]), where a request goes and what
//! its answer needs ([`Target`]), and the start of its exchange with a
//! backend. Planning, forwarding, logging and mirroring all use these, so
//! they live apart from each of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::HeaderValue;
use http::Version;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::choose::How;
use crate::exchange::{Exchange, Recorders};
use crate::pool::{Backend, Pool};

/// What the proxy knows about one downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: std::net::SocketAddr,
    /// The listener's address as configured, which `[access_log]
    /// listeners` names.
    pub listener: std::net::SocketAddr,
    /// The client's IP, ready for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
    /// Seed sequence for this connection's per-request RNGs.
    rng: AtomicU64,
}

/// splitmix64's increment: consecutive seeds land far apart.
pub(super) const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl ConnInfo {
    /// Info for a connection from `client`, over `proto`, seeded with `seed`.
    pub fn new(client: std::net::SocketAddr, proto: &'static str, seed: u64) -> ConnInfo {
        let ip = client.ip().to_string();
        ConnInfo {
            client,
            listener: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            client_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(proto),
            rng: AtomicU64::new(seed),
        }
    }

    /// The same, on the listener configured as `listener`.
    pub fn on_listener(mut self, listener: std::net::SocketAddr) -> ConnInfo {
        self.listener = listener;
        self
    }

    pub(super) fn request_rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(self.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }
}

/// Where a request goes, and what the answer needs from the request.
pub(super) struct Target {
    /// Index of the route in the snapshot.
    pub(super) route: usize,
    /// Index of the pool among the route's targets.
    pub(super) target: usize,
    /// A new sticky cookie to set on the response.
    pub(super) new_cookie: Option<HeaderValue>,
    /// The client's side of an upgrade it asked for.
    pub(super) downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Whether the request may be sent again after a failed connect.
    pub(super) replayable: bool,
    /// Whether the request may reach the backend twice: an idempotent
    /// method and no body (RFC 9110 §9.2.2), so a copy of its head is all
    /// a second attempt needs.
    pub(super) repeatable: bool,
    /// Whether the pool sends a request again after a connection closed
    /// unanswered (see `forward`).
    pub(super) retry_unanswered: bool,
    /// Whether its exchange can run inline on a plain HTTP/1.1 connection
    /// (see [`crate::pool::h1`]): no body, no upgrade.
    pub(super) inline: bool,
    /// How the pool was chosen.
    pub(super) how: How,
    /// The HTTP version the client spoke.
    pub(super) version: Version,
    /// The client's address, for the access log.
    pub(super) client: std::net::SocketAddr,
    /// Whether the listener's requests are logged.
    pub(super) logged: bool,
    /// The request's ID (for the response and the log) and trace ID.
    pub(super) tags: Tags,
}

/// What a request is known by, in its log line and to its backend.
#[derive(Debug, Clone, Default)]
pub(super) struct Tags {
    /// The request ID, when IDs are on.
    pub(super) request_id: Option<HeaderValue>,
    /// The trace ID of the `traceparent` the backend gets, if any.
    pub(super) trace_id: Option<[u8; 16]>,
}

/// Start counting a request on `backend` of `pool`, begun at `started`.
pub(super) fn begin_exchange(
    pool: &Arc<Pool>,
    codes: &[Arc<[prometheus::IntCounter; 5]>],
    backend: &Arc<Backend>,
    started: Instant,
) -> Exchange {
    let at = pool.backends.iter().position(|b| Arc::ptr_eq(b, backend));
    let recorders = Recorders {
        guard: pool.guard.clone(),
        codes: at.and_then(|i| codes.get(i)).cloned(),
        pool: Some(pool.clone()),
    };
    Exchange::begin(backend, started, recorders)
}
