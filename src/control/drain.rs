//! Draining a backend that left the config: no new requests, the ones in
//! flight finish, and what outlives `drain_timeout` is cut.
//!
//! Removal is a state change, not a drop: the backend stays counted (in
//! `/status` and the gauges) until its last request ends, and its metric
//! series are forgotten only after the cut requests have unwound.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::pool::Backend;

/// Stop sending to `backend`, and in a task of its own wait for its
/// in-flight requests (cutting them after `timeout`), count the cut ones
/// and forget its series.
pub(super) fn start(backend: Arc<Backend>, timeout: Duration, metrics: Metrics) {
    backend.start_draining();
    tracing::info!(pool = %backend.pool, backend = %backend.addr, in_flight = backend.in_flight(), "draining backend");
    tokio::spawn(async move {
        let addr = backend.addr.to_string();
        match finish_drain(&backend, timeout).await {
            DrainEnd::Drained => tracing::info!(pool = %backend.pool, backend = %addr, "backend drained"),
            DrainEnd::Cut(cut) => {
                metrics.drain_cut.with_label_values(&[&*backend.pool, addr.as_str()]).inc_by(cut as u64);
                tracing::warn!(pool = %backend.pool, backend = %addr, cut, "drain timed out; cut in-flight requests")
            }
        }
        // Wait for the cut requests to unwind before forgetting the series.
        let _ = tokio::time::timeout(Duration::from_secs(5), backend.wait_idle()).await;
        metrics.forget_backend(&backend.pool, &addr);
    });
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every in-flight request finished in time.
    Drained,
    /// `drain_timeout` passed; this many requests were cut.
    Cut(usize),
}

/// Wait up to `timeout` for a draining backend's requests, then cut the rest.
pub async fn finish_drain(backend: &Backend, timeout: Duration) -> DrainEnd {
    match tokio::time::timeout(timeout, backend.wait_idle()).await {
        Ok(()) => DrainEnd::Drained,
        Err(_) => DrainEnd::Cut(backend.cut_in_flight()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddr, Scheme};

    fn backend() -> Arc<Backend> {
        let addr = BackendAddr { scheme: Scheme::Http, authority: "127.0.0.1:1".into() };
        Arc::new(Backend::new("canary".into(), addr, Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_when_the_last_request_finishes() {
        let b = backend();
        let first = b.begin_request();
        let second = b.begin_request();
        b.start_draining();
        let drain = tokio::spawn({
            let b = b.clone();
            async move { finish_drain(&b, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!drain.is_finished(), "drained with a request still in flight");
        drop(second);
        assert_eq!(drain.await.unwrap(), DrainEnd::Drained);
        assert_eq!(b.cut_requests(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_cuts_what_outlives_the_timeout() {
        let b = backend();
        let _stuck = b.begin_request();
        b.start_draining();
        let started = tokio::time::Instant::now();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Cut(1));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(b.cut_requests(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_backend_drains_at_once() {
        let b = backend();
        b.start_draining();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Drained);
    }
}
