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

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;

use super::target::{ConnInfo, Tags, Target};
use crate::access_log::trace;
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
/// context into shape, as the backend will see them.
pub(super) fn tag(settings: &RequestHeaders, headers: &mut HeaderMap, rng: &mut SmallRng) -> Tags {
    let (_, parent) = trace::prepare(headers, settings.start_traces, rng);
    let request_id =
        settings.request_id.as_ref().map(|name| request_id::settle(headers, name, settings.request_id_max_len, rng));
    Tags { request_id, trace_id: parent.map(|parent| parent.trace_id) }
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
    let mut record = record(snapshot, target.client, request, target.version, &target.tags);
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
    tags: &Tags,
    rng: &mut SmallRng,
    err: &ProxyError,
    started: Instant,
) {
    let Some(log) = of(snapshot, conn.listener) else { return };
    let status = err.status().as_u16();
    if !log.wants(status >= 500, rng.random()) {
        return;
    }
    let mut record = record(snapshot, conn.client, parts, parts.version, tags);
    record.status = status;
    record.failure = Some(kind(err));
    record.ended(started);
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

/// What every record says of its request, from its head as the backend
/// gets it (or as it came, when refused before routing), the HTTP version
/// the client spoke, and its tags. Shares the URI and header values with
/// the request (see `Record`).
fn record(snapshot: &Snapshot, client: SocketAddr, head: &impl Head, version: Version, tags: &Tags) -> Record<'static> {
    let uri = head.uri();
    Record {
        kind: Kind::Request,
        // Both set when the request ends (`Record::ended`).
        time: SystemTime::UNIX_EPOCH,
        client,
        method: head.method().clone(),
        uri: uri.clone(),
        host_header: if uri.authority().is_none() { head.headers().get(header::HOST).cloned() } else { None },
        keep_query: snapshot.config.access_log.as_ref().is_some_and(|c| c.query),
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
        request_id: tags.request_id.clone(),
        trace_id: tags.trace_id,
    }
}

/// A request's head, whole or in its parts.
trait Head {
    fn method(&self) -> &Method;
    fn uri(&self) -> &Uri;
    fn headers(&self) -> &HeaderMap;
}

impl Head for Parts {
    fn method(&self) -> &Method {
        &self.method
    }
    fn uri(&self) -> &Uri {
        &self.uri
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl Head for Request<RequestBody> {
    fn method(&self) -> &Method {
        Request::method(self)
    }
    fn uri(&self) -> &Uri {
        Request::uri(self)
    }
    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
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
