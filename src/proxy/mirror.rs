//! Mirroring: a copy of a share of a route's requests goes to a shadow
//! pool, whose answers are read and discarded.
//!
//! Before a version takes real users, a shadow pool running it can take a
//! copy of production traffic (Envoy's `request_mirror_policies`, NGINX's
//! `mirror`). The copy must never cost the primary request anything, so:
//!
//! - the copy is sent by a task of its own, spawned when the copy is
//!   ready, and the primary never waits for it;
//! - a body is copied as it streams to the primary (a [`BodyTap`]), up to
//!   the route's `max_body`; a longer body is not mirrored
//!   (`too_large`), and the copy leaves only once the whole body has
//!   arrived;
//! - copies in flight per route are bounded by [`MAX_IN_FLIGHT`]; the
//!   excess is dropped (`dropped`) rather than queued;
//! - a copy is sent once, never retried, and recorded on the shadow pool's
//!   own exchange: its backend's metrics, its passive health and its
//!   guard (so a guard with a `baseline` can judge the shadow), never the
//!   primary pool's.
//!
//! The copy carries `X-Cutover-Mirror: 1`, and its `Host` gets the suffix
//! `-shadow` (before any port) as Envoy's does, so the shadow can tell a
//! copy from real traffic and avoid its side effects.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::target::begin_exchange;
use crate::body::UpstreamBody;
use crate::pool::session::{before, Session, WouldResend};
use crate::pool::UpstreamFailure;
use crate::request_body::{BodyTap, RequestBody};
use crate::snapshot::{RouteMirror, Snapshot};

/// Most copies in flight per route; more are dropped.
pub(super) const MAX_IN_FLIGHT: usize = 256;

/// The header that marks a copy.
pub(super) const MIRROR_HEADER: &str = "x-cutover-mirror";

/// Indices into [`RouteMirror::counts`].
const SENT: usize = 0;
const DROPPED: usize = 1;
const TOO_LARGE: usize = 2;
const FAILED: usize = 3;

/// Copy `request` (already rewritten for a backend) for the route's shadow
/// pool, if the route mirrors and the request is chosen.
pub(super) fn start(snapshot: &Snapshot, route: usize, request: &mut Request<RequestBody>, rng: &mut SmallRng) {
    let Some(mirror) = &snapshot.routes[route].mirror else { return };
    if mirror.header.as_ref().is_some_and(|h| !request.headers().contains_key(h)) {
        return;
    }
    if mirror.percent < 100 && rng.random_range(0..100) >= mirror.percent {
        return;
    }
    // A copy the bound would drop is not made: with a slow shadow the bound
    // is reached and stays reached, and copying every request's head only
    // to drop it would cost the primary CPU. `send` checks again, for
    // copies whose body arrives later.
    if mirror.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
        mirror.counts[DROPPED].inc();
        return;
    }
    copy(mirror.clone(), request, rng.random(), snapshot.request_timeout);
}

/// The copy of a request chosen for mirroring: its head now, its body
/// (through a tap) when the body has ended.
#[inline(never)]
fn copy(mirror: Arc<RouteMirror>, request: &mut Request<RequestBody>, seed: u64, timeout: std::time::Duration) {
    let head = Head::of(request);
    let body = request.body_mut();
    if http_body::Body::is_end_stream(body) {
        send(mirror, head, Bytes::new(), seed, timeout);
        return;
    }
    if http_body::Body::size_hint(body).lower() > mirror.max_body as u64 {
        mirror.counts[TOO_LARGE].inc();
        return;
    }
    let limit = mirror.max_body;
    body.tap(BodyTap::new(
        limit,
        Box::new(move |copied| match copied {
            Some(bytes) => send(mirror, head, bytes, seed, timeout),
            None => mirror.counts[TOO_LARGE].inc(),
        }),
    ));
}

/// What a copy keeps of the request's head.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    /// The head of `request`, marked as a copy, `Host` suffixed.
    fn of(request: &Request<RequestBody>) -> Head {
        let mut headers = request.headers().clone();
        headers.insert(MIRROR_HEADER, HeaderValue::from_static("1"));
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(shadow_host) {
            if let Ok(value) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, value);
            }
        }
        Head { method: request.method().clone(), uri: request.uri().clone(), headers }
    }
}

/// `host` with `-shadow` before its port, if any: `shop:8080` →
/// `shop-shadow:8080`.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Send the copy from a task of its own, unless too many are in flight.
fn send(mirror: Arc<RouteMirror>, head: Head, body: Bytes, seed: u64, timeout: std::time::Duration) {
    if mirror.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
        mirror.in_flight.fetch_sub(1, Ordering::Relaxed);
        mirror.counts[DROPPED].inc();
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        mirror.in_flight.fetch_sub(1, Ordering::Relaxed);
        mirror.counts[DROPPED].inc();
        return;
    };
    runtime.spawn(async move {
        let answered = run(&mirror, head, body, seed, timeout).await;
        mirror.counts[if answered { SENT } else { FAILED }].inc();
        mirror.in_flight.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Send the copy once to a backend of the shadow pool and read its answer
/// to the end; whether an answer came.
async fn run(mirror: &RouteMirror, head: Head, body: Bytes, seed: u64, timeout: std::time::Duration) -> bool {
    let mut rng = SmallRng::seed_from_u64(seed);
    let Some(backend) = mirror.pool.pick(&mut rng, None).cloned() else { return false };
    let started = Instant::now();
    let mut exchange = begin_exchange(&mirror.pool, &[], &backend, started);
    let mut timer = Box::pin(tokio::time::sleep_until(started + timeout));
    let inline = body.is_empty();
    let mut request = Request::new(RequestBody::full(body));
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.headers_mut() = head.headers;
    let (conn, reuse) = match before(&mut timer, backend.checkout(true, inline)).await {
        Some(Ok(checked_out)) => checked_out,
        Some(Err(err)) => {
            tracing::debug!(route = %mirror.route, error = %err, "mirror connect failed");
            exchange.failed(UpstreamFailure::Connect);
            return false;
        }
        None => {
            exchange.failed(UpstreamFailure::Timeout);
            return false;
        }
    };
    let never_again = WouldResend { unprocessed: false, closed_unanswered: false };
    match Session::new(conn, reuse).send(&mut request, never_again, started, &mut timer).await {
        Ok(answer) => {
            exchange.answered(answer.status().as_u16());
            let response = UpstreamBody::respond(answer, exchange, timeout, timer);
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            true
        }
        Err(err) => {
            tracing::debug!(route = %mirror.route, "mirror copy got no answer");
            exchange.failed(err.failure.kind());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_keeps_its_port() {
        assert_eq!(shadow_host("shop.example.com"), "shop.example.com-shadow");
        assert_eq!(shadow_host("shop.example.com:8080"), "shop.example.com-shadow:8080");
        assert_eq!(shadow_host("10.0.0.1:80"), "10.0.0.1-shadow:80");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }
}
