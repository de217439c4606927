//! Planning a request before any future is polled: what the proxy knows
//! of the client's connection, the checks and rewrite of the head, the
//! choice of a route, a pool and a backend, and the start of the request's
//! exchange. A [`Plan`] owns all of it and borrows nothing, so the future
//! that forwards it holds the request once.

use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Version};
use hyper::body::{Body as _, Incoming};
use prometheus::IntCounter;
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::{Instant, Sleep};

use super::choose::{choose_target, Choice};
use super::head::{check_framing, is_idempotent, origin_form, request_host};
use super::log;
use super::target::{begin_exchange, ConnInfo, Tags, Target};
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::headers;
use crate::pool::Backend;
use crate::snapshot::{self, Snapshot, Sticky};
use crate::tunnel;

/// A routed request and the backend it goes to: everything `forward`
/// needs, owned.
pub(super) struct Plan {
    /// The rewritten request, until it is sent.
    pub(super) request: Request<RequestBody>,
    /// Where it goes, and what the answer needs from it.
    pub(super) target: Target,
    /// The backend chosen (another one after a failed connect).
    pub(super) backend: Arc<Backend>,
    /// The request's exchange with that backend.
    pub(super) exchange: Exchange,
    /// One timer serves the whole exchange: the request deadline while
    /// connecting and waiting for the head, then the body's idle limit.
    pub(super) timer: Pin<Box<Sleep>>,
}

/// Route, choose a pool and a backend, rewrite the head, and start the
/// exchange's clock.
pub(super) fn plan(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    rng: &mut SmallRng,
    req: Request<Incoming>,
    body_timeouts: &IntCounter,
) -> Result<Plan, Refusal> {
    let started = Instant::now();
    let (mut target, mut request) = prepare(snapshot, conn, rng, req, body_timeouts, started)?;
    target.tags = log::tag(&snapshot.config.server.requests, request.headers_mut(), rng);
    let route = &snapshot.routes[target.route];
    let (pool, codes) = (&route.targets[target.target], &route.codes[target.target]);
    let Some(backend) = pool.pick(rng, None).cloned() else {
        let (parts, _) = request.into_parts();
        log::refused(snapshot, conn, &parts, &target.tags, rng, &ProxyError::NoBackend, started);
        return Err(Refusal { err: ProxyError::NoBackend, request_id: target.tags.request_id });
    };
    let mut exchange = begin_exchange(pool, codes, &backend, started);
    // Only a request the primary pool takes is copied, with its request ID.
    super::mirror::start(snapshot, target.route, &mut request, rng);
    if let Some(log) = log::of(snapshot, conn.listener) {
        // An unsampled request is logged only if it fails. Its record is
        // built then, from the request still in the plan; a request the
        // upstream client takes away needs its record now.
        let sampled = log.wants(false, rng.random());
        if sampled || !log::kept_until_answered(&target, &backend) {
            let mut pending = log::pending(snapshot, log, &target, &request, started, !sampled);
            if !request.body().is_end_stream() {
                request.body_mut().count_into(pending.count_body());
            }
            exchange.set_log(pending);
        }
    }
    let timer = Box::pin(tokio::time::sleep_until(started + snapshot.request_timeout));
    Ok(Plan { request, target, backend, exchange, timer })
}

/// The proxy's answer to a request it could not forward.
pub(super) fn refused(err: ProxyError) -> http::Response<crate::body::ProxyBody> {
    tracing::debug!(error = ?err, source = ?err.source(), "request answered by the proxy");
    err.response()
}

/// A request the proxy answers itself before it reaches a backend, with
/// the request ID its answer carries.
pub(super) struct Refusal {
    /// Why, and what the client gets.
    pub(super) err: ProxyError,
    /// The request's ID (the client's, or a new one), when IDs are on.
    pub(super) request_id: Option<HeaderValue>,
}

impl Refusal {
    /// The proxy's answer, with the request's ID.
    pub(super) fn response(self, snapshot: &Snapshot) -> http::Response<crate::body::ProxyBody> {
        let mut response = refused(self.err);
        if let (Some(name), Some(id)) = (&snapshot.config.server.requests.request_id, self.request_id) {
            response.headers_mut().insert(name.clone(), id);
        }
        response
    }
}

/// Refuse a request with `err` before it is routed: give it an ID and its
/// trace context like any other request, so its log line and its answer
/// can be joined to what the client saw, and log it.
pub(super) fn refuse(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    rng: &mut SmallRng,
    err: ProxyError,
    started: Instant,
) -> Refusal {
    let tags = log::tag(&snapshot.config.server.requests, &mut parts.headers, rng);
    log::refused(snapshot, conn, parts, &tags, rng, &err, started);
    Refusal { err, request_id: tags.request_id }
}

/// Check, route and choose; rewrite the head for the backend: origin-form
/// URI, HTTP/1.1, `X-Forwarded-*` set, hop-by-hop headers gone, `Host` kept
/// as the client sent it.
fn prepare(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    rng: &mut SmallRng,
    req: Request<Incoming>,
    body_timeouts: &IntCounter,
    started: Instant,
) -> Result<(Target, Request<RequestBody>), Refusal> {
    let (mut parts, body) = req.into_parts();
    let (host, route_at, choice) = match decide(snapshot, &parts, rng) {
        Ok(decided) => decided,
        Err(err) => return Err(refuse(snapshot, conn, &mut parts, rng, err, started)),
    };
    let route = &snapshot.routes[route_at];
    let version = parts.version;

    // Before the version is rewritten: only an HTTP/1.1 client may upgrade.
    let upgrade = tunnel::requested_upgrade(&parts);
    let host_from_target = parts.uri.authority().is_some();
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    if !snapshot.config.server.allow_underscores_in_headers {
        let dropped = headers::drop_underscored(&mut parts.headers);
        if dropped > 0 {
            snapshot.underscore_headers_dropped.inc_by(dropped);
        }
    }
    // Strip first, then set: a client's `Connection: x-forwarded-for, host`
    // must not remove the headers the proxy itself adds.
    let named_gone = headers::strip_hop_by_hop(&mut parts.headers);
    // Only the proxy marks a request as a mirror's copy: a client's own
    // marker would make the primary's backend skip what a copy skips
    // (charging, writing), as the docs ask shadows to.
    parts.headers.remove(super::mirror::MIRROR_HEADER);
    // Room for what the proxy adds (three `X-Forwarded-*`, the request ID,
    // `traceparent`): the map grows once at most, not field by field.
    parts.headers.reserve(5);
    headers::set_forwarded(&mut parts.headers, &conn.client_ip, &conn.proto, host.as_ref());
    match host {
        // The client's own `Host`, still in place: the usual case.
        Some(_) if !host_from_target && !named_gone => {}
        // HTTP/2 and absolute-form requests: the authority goes into the
        // `Host` an HTTP/1.1 backend expects.
        Some(host) => {
            parts.headers.insert(header::HOST, host);
        }
        // An HTTP/1.0 request may have no host at all; HTTP/1.1 requires
        // the field, empty when there is no authority (RFC 9112 §3.2).
        None => {
            parts.headers.insert(header::HOST, HeaderValue::from_static(""));
        }
    }
    if let Some(protocol) = &upgrade {
        tunnel::ask_upgrade(&mut parts.headers, protocol);
    }
    let repeatable = body.is_end_stream() && is_idempotent(&parts.method);
    let replayable = body.is_end_stream() || is_idempotent(&parts.method);
    let inline = body.is_end_stream() && upgrade.is_none() && parts.method != Method::CONNECT;
    let body = RequestBody::new(body, snapshot.body_read_timeout, body_timeouts);
    let mut request = Request::from_parts(parts, body);
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let new_cookie = match (choice.new_cookie, &route.sticky) {
        (Some(token), Some(Sticky::Cookie { name })) => snapshot::sticky_cookie(name, &token),
        _ => None,
    };
    let target = Target {
        route: route_at,
        target: choice.target,
        new_cookie,
        downstream_upgrade,
        replayable,
        repeatable,
        inline,
        retry_unanswered: route.targets[choice.target].retry_unanswered,
        how: choice.how,
        version,
        client: conn.client,
        logged: log::of(snapshot, conn.listener).is_some(),
        tags: Tags::default(),
    };
    Ok((target, request))
}

/// The checks of the head, the route and the pool: everything that can
/// refuse a request before it is rewritten.
fn decide(
    snapshot: &Snapshot,
    parts: &http::request::Parts,
    rng: &mut SmallRng,
) -> Result<(Option<HeaderValue>, usize, Choice), ProxyError> {
    check_framing(parts, snapshot.max_request_header_bytes)?;
    let host = request_host(parts)?;
    let route_at = snapshot
        .table
        .find(host.as_ref().and_then(|h| h.to_str().ok()), parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    let choice = choose_target(&snapshot.routes[route_at], parts, rng).ok_or(ProxyError::NoBackend)?;
    Ok((host, route_at, choice))
}
