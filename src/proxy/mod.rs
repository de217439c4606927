//! The request path: load the snapshot → route → choose a pool → choose a
//! backend → forward → stream the answer back.
//!
//! [`Proxy::handle`] reads the shared state exactly once (one
//! `ArcSwap::load_full`) and passes `&Snapshot` down, takes no lock beyond a
//! backend's own idle-connection list, and answers every failure with a short
//! plain-text response tagged by where it came from (see [`crate::error`]).
//! Randomness comes from a small per-request RNG seeded from the connection,
//! whose seed comes from the proxy's seed: a seeded run makes the same
//! choices for the same requests on the same connections.
//!
//! This file plans a request (check, route, choose, rewrite); `head` holds
//! the route-independent checks of the head, `choose` the choice of a
//! pool, and `forward` the sending with its retry policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::metrics::ClientTimeouts;
use crate::snapshot::Snapshot;
use crate::tunnel;
use prometheus::IntGauge;

mod choose;
mod forward;
mod head;
mod log;
mod mirror;
mod plan;
mod target;

use forward::forward;
use plan::plan;
pub use target::ConnInfo;
use target::GOLDEN_GAMMA;

/// The shared proxy state: the current snapshot and the seed source.
#[derive(Debug)]
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    /// Per-connection seeds are drawn from here.
    seeds: AtomicU64,
    /// Upgraded (WebSocket) tunnels, counted for shutdown.
    tunnels: Arc<tunnel::Tunnels>,
    /// Counts of clients cut off by the protective timeouts.
    timeouts: ClientTimeouts,
    /// Idle client connections parked now (`server::serving`).
    parked: IntGauge,
}

impl Proxy {
    /// A proxy serving `snapshot`, drawing connection seeds from `seed`,
    /// counting its clients' timeouts in `timeouts` and its parked idle
    /// connections in `parked`.
    pub fn new(snapshot: Snapshot, seed: u64, timeouts: ClientTimeouts, parked: IntGauge) -> Proxy {
        Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            seeds: AtomicU64::new(seed),
            tunnels: Arc::default(),
            timeouts,
            parked,
        }
    }

    /// Where the idle client connections parked now are counted.
    pub fn parked_connections(&self) -> &IntGauge {
        &self.parked
    }

    /// Where clients cut off by a timeout are counted.
    pub fn client_timeouts(&self) -> &ClientTimeouts {
        &self.timeouts
    }

    /// The upgraded tunnels this proxy carries.
    pub fn tunnels(&self) -> &tunnel::Tunnels {
        &self.tunnels
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publish a new snapshot; requests that already loaded the old one
    /// finish with it.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// A seed for a new connection.
    pub fn connection_seed(&self) -> u64 {
        let z = self.seeds.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        // splitmix64 finaliser, so connection seeds are not merely sequential.
        let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Serve one request. Routing, the choice of a backend and the rewrite
    /// of the head happen here, before the returned future is first
    /// polled; the future owns what it needs and borrows nothing, so it
    /// holds the request once (see [`Handling`]).
    pub fn handle(
        &self,
        conn: &ConnInfo,
        req: Request<Incoming>,
    ) -> Handling<impl Future<Output = Response<ProxyBody>>> {
        let snapshot = self.snapshot.load_full();
        let mut rng = conn.request_rng();
        match plan(&snapshot, conn, &mut rng, req, &self.timeouts.body_read) {
            Ok(plan) => {
                let tunnels = plan.target.downstream_upgrade.is_some().then(|| self.tunnels.clone());
                Handling::Forwarding { forwarding: Box::pin(forward(snapshot, rng, plan, tunnels)) }
            }
            Err(refusal) => Handling::answered(refusal.response(&snapshot)),
        }
    }

    /// Refuse a request the connection found malformed before it came
    /// here (see `server`): logged, and answered with its request ID, as
    /// the proxy's own refusals are.
    pub fn refuse(
        &self,
        conn: &ConnInfo,
        req: Request<Incoming>,
        err: crate::error::ProxyError,
    ) -> Response<ProxyBody> {
        let snapshot = self.snapshot.load_full();
        let mut rng = conn.request_rng();
        let (mut parts, _) = req.into_parts();
        plan::refuse(&snapshot, conn, &mut parts, &mut rng, err, tokio::time::Instant::now()).response(&snapshot)
    }
}

pin_project_lite::pin_project! {
    /// A request being served: answered by the proxy itself, or forwarded.
    ///
    /// A plain enum rather than an `async` block around [`forward`]: such a
    /// block would hold the forwarding future twice (as the captured value
    /// and as the awaited one). The forwarding future is boxed: hyper keeps
    /// a slot of this enum's size for the whole life of an HTTP/1.1
    /// connection, idle ones included, so inline it would cost every idle
    /// connection a kilobyte; boxed, a request allocates it and frees it
    /// when it ends, and the moves on its way into hyper copy a pointer.
    #[project = HandlingProj]
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    pub enum Handling<F> {
        /// The proxy's own response, ready now.
        Answered { response: Option<Response<ProxyBody>> },
        /// On its way to a backend.
        Forwarding { forwarding: Pin<Box<F>> },
    }
}

impl<F> Handling<F> {
    /// A response the proxy gives without asking a backend.
    pub fn answered(response: Response<ProxyBody>) -> Handling<F> {
        Handling::Answered { response: Some(response) }
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Handling<F> {
    type Output = Response<ProxyBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Response<ProxyBody>> {
        match self.project() {
            HandlingProj::Answered { response } => Poll::Ready(response.take().unwrap_or_else(|| {
                // Polled again after it was ready: a caller's bug, but not
                // one to panic over on the request path.
                let mut late = Response::new(ProxyBody::empty());
                *late.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                late
            })),
            HandlingProj::Forwarding { forwarding } => forwarding.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The future of size `Fut` that `f` returns.
    fn future_size<'a, F, Fut>(_f: F) -> usize
    where
        F: FnOnce(&'a Proxy, &'a ConnInfo, Request<Incoming>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every forwarded request allocates its forwarding future, so it must
    /// hold the request and the plan once, and stay within what glibc's
    /// per-thread cache hands out and takes back without touching its
    /// arena's bins: blocks of up to 1,032 bytes. A larger block costs each
    /// request a search of the bins and a merge with its neighbours when
    /// freed, and fetches their cache lines.
    #[test]
    fn a_request_future_holds_the_request_once() {
        fn size<F, Fut>(_f: F) -> usize
        where
            F: FnOnce(Arc<Snapshot>, rand::rngs::SmallRng, plan::Plan, Option<Arc<tunnel::Tunnels>>) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = size(forward);
        assert!(size <= 1_032, "the forwarding future is {size} bytes");
    }

    /// What `Proxy::handle` returns sits in hyper's slot for a request's
    /// future, which an HTTP/1.1 connection keeps while it idles: the
    /// forwarding must be behind a pointer, leaving the size of the
    /// proxy's own response (its head and a short body).
    #[test]
    fn what_hyper_keeps_per_connection_is_small() {
        let size = future_size(Proxy::handle);
        assert!(size <= 320, "Proxy::handle's future is {size} bytes");
    }
}
