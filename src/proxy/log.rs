//! The request path's side of the access log, request IDs and trace
//! context: tagging a request on its way to the backend, and building its
//! record.
//!
//! Whether a request is logged is decided with the request's seeded RNG
//! before any record is built, so an unsampled request allocates nothing for
//! the log. A failure is logged whatever the draw: its record is built then,
//! from the request the plan still holds (see `forward`), or here for the
//! requests the proxy refuses before choosing a backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Version};
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;

use super::target::{ConnInfo, Target};
use crate::access_log::trace::{self, TraceParent, TRACEPARENT};
use crate::access_log::{request_id, AccessLog, Kind, Pending, Record};
use crate::body::RequestBody;
use crate::config::{RequestHeaders, UpstreamProtocol};
use crate::error::ProxyError;
use crate::pool::Backend;
use crate::snapshot::Snapshot;

/// The log that requests on `listener` go to, if any.
pub(super) fn of(snapshot: &Snapshot, listener: SocketAddr) -> Option<&Arc<AccessLog>> {
    let config = snapshot.config.access_log.as_ref()?;
    if !config.covers(listener) {
        return None;
    }
    snapshot.access_log.as_ref()
}

/// Give the request its ID (the client's, or a new one) and bring its trace
/// context into shape, as the backend will see them. Returns the ID.
pub(super) fn tag(settings: &RequestHeaders, headers: &mut HeaderMap, rng: &mut SmallRng) -> Option<HeaderValue> {
    trace::prepare(headers, settings.start_traces, rng);
    let name = settings.request_id.as_ref()?;
    Some(request_id::settle(headers, name, settings.request_id_max_len, rng))
}

/// The pending record of a request forwarded to a backend.
pub(super) fn pending(
    snapshot: &Snapshot,
    log: &Arc<AccessLog>,
    target: &Target,
    request: &Request<RequestBody>,
    started: Instant,
    failures_only: bool,
) -> Box<Pending> {
    let route = &snapshot.routes[target.route];
    let mut record =
        record(snapshot, target.client, request.method(), request.uri(), request.headers(), target.version, started);
    record.route = Some(route.name.clone());
    record.pool = Some(route.targets[target.target].name.clone());
    record.choice = Some(target.how);
    Pending::new(log.clone(), record, started, failures_only)
}

/// Whether the request stays in the plan until its answer comes, so that
/// its record can be built then if it fails: only the inline HTTP/1.1
/// client keeps it; hyper's takes it (see `pool::session`).
pub(super) fn kept_until_answered(target: &Target, backend: &Backend) -> bool {
    let transport = backend.transport();
    target.inline && transport.protocol == UpstreamProtocol::Http1 && transport.tls.is_none()
}

/// Log a request the proxy refused before it reached a backend: always
/// when it answered a 5xx, else as sampling says.
pub(super) fn refused(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: &Parts,
    rng: &mut SmallRng,
    err: &ProxyError,
    started: Instant,
) {
    let Some(log) = of(snapshot, conn.listener) else { return };
    let status = err.status().as_u16();
    if !log.wants(status >= 500, rng.random()) {
        return;
    }
    let mut record = record(snapshot, conn.client, &parts.method, &parts.uri, &parts.headers, parts.version, started);
    record.status = status;
    record.failure = Some(kind(err));
    record.duration = started.elapsed();
    log.log(&record);
}

/// Why the proxy answered itself, as logged.
fn kind(err: &ProxyError) -> &'static str {
    match err {
        ProxyError::BadRequest(_) => "bad_request",
        ProxyError::RequestTimeout => "request_timeout",
        ProxyError::NotImplemented => "not_implemented",
        ProxyError::HeadersTooLarge => "headers_too_large",
        ProxyError::NoRoute => "no_route",
        ProxyError::NoBackend => "no_backend",
        ProxyError::Upstream(failure) => failure.as_str(),
    }
}

/// What every record says of its request.
fn record(
    snapshot: &Snapshot,
    client: SocketAddr,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    version: Version,
    started: Instant,
) -> Record {
    let keep_query = snapshot.config.access_log.as_ref().is_some_and(|c| c.query);
    let text = |value: Option<&http::HeaderValue>| value.and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host = uri.authority().map(|a| a.to_string()).or_else(|| text(headers.get(header::HOST)));
    let request_id = snapshot.config.server.requests.request_id.as_ref().and_then(|name| text(headers.get(name)));
    let mut traceparents = headers.get_all(&TRACEPARENT).iter();
    let trace_id = match (traceparents.next(), traceparents.next()) {
        (Some(value), None) => TraceParent::parse(value.as_bytes()).map(|parent| parent.trace_id),
        _ => None,
    };
    Record {
        kind: Kind::Request,
        time: SystemTime::now().checked_sub(started.elapsed()).unwrap_or_else(SystemTime::now),
        client,
        method: method.clone(),
        host: host.unwrap_or_default(),
        path: uri.path().to_owned(),
        query: if keep_query { uri.query().map(str::to_owned) } else { None },
        protocol: protocol(version),
        status: 0,
        // Counted as the body is read (see `plan`): nothing is read yet.
        bytes_in: 0,
        bytes_out: 0,
        duration: std::time::Duration::ZERO,
        upstream_ttfb: None,
        route: None,
        pool: None,
        backend: None,
        revision: snapshot.revision,
        choice: None,
        retries: 0,
        failure: None,
        request_id,
        trace_id,
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
