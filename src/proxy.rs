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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::{Body as _, Incoming};
use prometheus::IntCounter;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, Sleep};

use crate::body::{ProxyBody, RequestBody, UpstreamBody};
use crate::config::ForceMatch;
use crate::error::{ProxyError, UpstreamFailure};
use crate::exchange::{Exchange, Recorders};
use crate::headers;
use crate::metrics::ClientTimeouts;
use crate::pool::session::{before, ClientFailure, SendError, SendFailure, Session, WouldResend};
use crate::pool::{Backend, Conn, Pool, Reuse};
use crate::snapshot::{self, Route, Snapshot, Sticky};
use crate::split::{self, Split};
use crate::tunnel;

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
}

/// What the proxy knows about one downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's IP, ready for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: HeaderValue,
    /// Seed sequence for this connection's per-request RNGs.
    rng: AtomicU64,
}

/// splitmix64's increment: consecutive seeds land far apart.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl ConnInfo {
    /// Info for a connection from `client`, over `proto`, seeded with `seed`.
    pub fn new(client: std::net::SocketAddr, proto: &'static str, seed: u64) -> ConnInfo {
        let ip = client.ip().to_string();
        ConnInfo {
            client_ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(proto),
            rng: AtomicU64::new(seed),
        }
    }

    fn request_rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(self.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }
}

impl Proxy {
    /// A proxy serving `snapshot`, drawing connection seeds from `seed`,
    /// counting its clients' timeouts in `timeouts`.
    pub fn new(snapshot: Snapshot, seed: u64, timeouts: ClientTimeouts) -> Proxy {
        Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            seeds: AtomicU64::new(seed),
            tunnels: Arc::default(),
            timeouts,
        }
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
                Handling::Forwarding { forwarding: forward(snapshot, rng, plan, tunnels) }
            }
            Err(err) => Handling::answered(refused(err)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being served: answered by the proxy itself, or forwarded.
    ///
    /// A plain enum rather than an `async` block around [`forward`]: such a
    /// block would hold the forwarding future twice (as the captured value
    /// and as the awaited one), and every request's future is moved a few
    /// times on its way into hyper, each move a copy of all of it.
    #[project = HandlingProj]
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    pub enum Handling<F> {
        /// The proxy's own response, ready now.
        Answered { response: Option<Response<ProxyBody>> },
        /// On its way to a backend.
        Forwarding { #[pin] forwarding: F },
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
            HandlingProj::Forwarding { forwarding } => forwarding.poll(cx),
        }
    }
}

/// The proxy's answer to a request it could not forward.
fn refused(err: ProxyError) -> Response<ProxyBody> {
    tracing::debug!(error = ?err, source = ?err.source(), "request answered by the proxy");
    err.response()
}

/// A routed request and the backend it goes to: everything [`forward`]
/// needs, owned.
struct Plan {
    /// The rewritten request, until it is sent.
    request: Request<RequestBody>,
    /// Where it goes, and what the answer needs from it.
    target: Target,
    /// The backend chosen (another one after a failed connect).
    backend: Arc<Backend>,
    /// The request's exchange with that backend.
    exchange: Exchange,
    /// One timer serves the whole exchange: the request deadline while
    /// connecting and waiting for the head, then the body's idle limit.
    timer: Pin<Box<Sleep>>,
}

/// Route, choose a pool and a backend, rewrite the head, and start the
/// exchange's clock.
fn plan(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    rng: &mut SmallRng,
    req: Request<Incoming>,
    body_timeouts: &IntCounter,
) -> Result<Plan, ProxyError> {
    let started = Instant::now();
    let (target, request) = prepare(snapshot, conn, rng, req, body_timeouts)?;
    let route = &snapshot.routes[target.route];
    let (pool, codes) = (&route.targets[target.target], &route.codes[target.target]);
    let backend: Arc<Backend> = pool.pick(rng, None).ok_or(ProxyError::NoBackend)?.clone();
    let exchange = begin_exchange(pool, codes, &backend, started);
    let timer = Box::pin(tokio::time::sleep_until(started + snapshot.request_timeout));
    Ok(Plan { request, target, backend, exchange, timer })
}

/// Send the planned request and stream the answer back; the retry policy.
///
/// A [`Session`] sends the request and says how it failed; here it is
/// decided what goes again, where, and how often:
/// - a connect that fails: once, on another backend of the pool, when the
///   request may be replayed (no body, or an idempotent method);
/// - a request that never reached the backend (a pooled connection found
///   closed as it was written): on another connection, as often as that
///   happens, since the backend saw nothing;
/// - a request the backend says it did not process (HTTP/2, RFC 9113
///   §8.7): once, whatever its method, when it has no body; Go's
///   `http.Transport` does the same;
/// - a request written on a connection that closed before any answer came
///   (see [`Target::repeatable`]): once, when it may reach a backend twice,
///   and on another backend of the pool when there is one (as nginx's
///   `proxy_next_upstream error`). On a pooled connection this is the
///   keep-alive race every client meets when the backend's keep-alive
///   timeout is the shorter one; on a fresh one, the backend died with the
///   request in hand. A pool's `retry_unanswered` turns this one off.
///
/// Every resend but the first kind is counted in
/// `cutover_upstream_retries_total{pool,reason}`.
///
/// The plan is used in place (`plan.x`), never moved into locals: the
/// future keeps what it captured for its whole life, so a moved-out copy
/// would double its size.
// Not `async fn` on purpose: see the comment in the body.
#[allow(clippy::manual_async_fn)]
fn forward(
    snapshot: Arc<Snapshot>,
    mut rng: SmallRng,
    mut plan: Plan,
    tunnels: Option<Arc<tunnel::Tunnels>>,
) -> impl Future<Output = Response<ProxyBody>> {
    // An `async` block rather than an `async fn`: an `async fn` moves each
    // argument into a local of its body, so the future would hold the plan
    // twice; the block uses the captured plan itself.
    async move {
        let mut first = true;
        let mut resent = false;
        let answer = loop {
            let checkout = plan.backend.checkout(!resent, plan.target.inline);
            let (conn, reuse) = match before(&mut plan.timer, checkout).await {
                None => return refused(fail(&mut plan.exchange, UpstreamFailure::Timeout)),
                Some(Ok(checked_out)) => checked_out,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "upstream connect failed");
                    if !(first && plan.target.replayable) {
                        return refused(fail(&mut plan.exchange, UpstreamFailure::Connect));
                    }
                    // The rare path, boxed so it does not grow every request's future.
                    match Box::pin(connect_elsewhere(&snapshot, &mut rng, &mut plan)).await {
                        Ok(checked_out) => checked_out,
                        Err(err) => return refused(err),
                    }
                }
            };
            first = false;
            let would_resend = WouldResend {
                // `inline`: no body and no upgrade, so its head is all of it.
                unprocessed: plan.target.inline && !resent,
                closed_unanswered: plan.target.repeatable && !resent && plan.target.retry_unanswered,
            };
            let session = Session::new(conn, reuse);
            let started = plan.exchange.started();
            let failure = match session.send(&mut plan.request, would_resend, started, &mut plan.timer).await {
                Ok(answer) => {
                    plan.exchange.answered(answer.status().as_u16());
                    break answer;
                }
                Err(SendError { failure, resendable }) => match failure {
                    SendFailure::NotSent if resendable && reuse.is_reused() => continue,
                    SendFailure::Unprocessed if resendable && would_resend.unprocessed => {
                        tracing::debug!(backend = %plan.backend.addr, "backend did not process the request; sending again");
                        count_retry(&plan.backend, RETRY_UNPROCESSED);
                        resent = true;
                        continue;
                    }
                    SendFailure::ClosedUnanswered if resendable && would_resend.closed_unanswered => {
                        // A pooled connection may have met the keep-alive
                        // race: not the backend's fault, and a fresh
                        // connection to it will do. A fresh connection
                        // closed on the request is the backend's failure,
                        // and only another backend gets the request.
                        let pooled = matches!(reuse, Reuse::Pooled { .. });
                        let (backend, moved) =
                            (plan.backend.clone(), move_elsewhere(&snapshot, &mut rng, &mut plan, !pooled));
                        if !(moved || pooled) {
                            return refused(send_failed(&mut plan.exchange, failure));
                        }
                        tracing::debug!(backend = %backend.addr, moved, "connection closed unanswered; sending again");
                        count_retry(&backend, RETRY_CLOSED_UNANSWERED);
                        resent = true;
                        continue;
                    }
                    failure => failure,
                },
            };
            return refused(send_failed(&mut plan.exchange, failure));
        };
        let switching = match (plan.target.downstream_upgrade, tunnels) {
            (Some(downstream), Some(tunnels)) => match answer.into_switching() {
                Ok(switching) => Ok((switching, downstream, tunnels)),
                Err(answer) => Err(answer),
            },
            _ => Err(answer),
        };
        let mut response = match switching {
            Ok((switching, downstream, tunnels)) => tunnel::open(switching, downstream, plan.exchange, &tunnels),
            // Not (or no longer) an upgrade: an ordinary response. Bytes the
            // client sent after its refused upgrade request are never read.
            // The body must keep flowing: silence as long as the whole
            // request_timeout means the backend is stuck.
            Err(answer) => UpstreamBody::respond(answer, plan.exchange, snapshot.request_timeout, plan.timer),
        };
        // The proxy answers in its own HTTP version (RFC 9110 §6.2),
        // whatever the backend spoke.
        *response.version_mut() = Version::HTTP_11;
        if let Some(cookie) = plan.target.new_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// Where a request goes, and what the answer needs from the request.
struct Target {
    /// Index of the route in the snapshot.
    route: usize,
    /// Index of the pool among the route's targets.
    target: usize,
    /// A new sticky cookie to set on the response.
    new_cookie: Option<HeaderValue>,
    /// The client's side of an upgrade it asked for.
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Whether the request may be sent again after a failed connect.
    replayable: bool,
    /// Whether the request may reach the backend twice: an idempotent
    /// method and no body (RFC 9110 §9.2.2), so a copy of its head is all
    /// a second attempt needs.
    repeatable: bool,
    /// Whether the pool sends a request again after a connection closed
    /// unanswered (see [`forward`]).
    retry_unanswered: bool,
    /// Whether its exchange can run inline on a plain HTTP/1.1 connection
    /// (see [`crate::pool::h1`]): no body, no upgrade.
    inline: bool,
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
) -> Result<(Target, Request<RequestBody>), ProxyError> {
    let (mut parts, body) = req.into_parts();
    check_framing(&parts, snapshot.max_request_header_bytes)?;

    let host = request_host(&parts)?;
    let route_at = snapshot
        .table
        .find(host.as_ref().and_then(|h| h.to_str().ok()), parts.uri.path())
        .ok_or(ProxyError::NoRoute)?;
    let route = &snapshot.routes[route_at];
    let choice = choose_target(route, &parts, rng).ok_or(ProxyError::NoBackend)?;

    // Before the version is rewritten: only an HTTP/1.1 client may upgrade.
    let upgrade = tunnel::requested_upgrade(&parts);
    let host_from_target = parts.uri.authority().is_some();
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    // Strip first, then set: a client's `Connection: x-forwarded-for, host`
    // must not remove the headers the proxy itself adds.
    let named_gone = headers::strip_hop_by_hop(&mut parts.headers);
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
    };
    Ok((target, request))
}

/// Start counting a request on `backend` of `pool`, begun at `started`.
fn begin_exchange(
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

/// `cutover_upstream_retries_total`'s reasons, as indices into
/// [`crate::metrics::BackendMetrics::retries`].
const RETRY_CONNECT: usize = 0;
const RETRY_UNPROCESSED: usize = 1;
const RETRY_CLOSED_UNANSWERED: usize = 2;

/// A connection closed unanswered: move the plan to another backend of the
/// pool, if there is one; whether it moved. The request's exchange moves
/// with it; the failure counts against the first backend only when it is to
/// `blame`.
fn move_elsewhere(snapshot: &Snapshot, rng: &mut SmallRng, plan: &mut Plan, blame: bool) -> bool {
    let route = &snapshot.routes[plan.target.route];
    let (pool, codes) = (&route.targets[plan.target.target], &route.codes[plan.target.target]);
    let Some(other) = pool.pick(rng, Some(&plan.backend)).cloned() else { return false };
    let fresh = begin_exchange(pool, codes, &other, plan.exchange.started());
    let left = std::mem::replace(&mut plan.exchange, fresh);
    if blame {
        left.abandon_for_retry(UpstreamFailure::Reset);
    } else {
        left.abandon();
    }
    plan.backend = other;
    true
}

/// The connect to the planned backend did not work: count that against it
/// and move the plan to one other backend of the pool.
async fn connect_elsewhere(
    snapshot: &Snapshot,
    rng: &mut SmallRng,
    plan: &mut Plan,
) -> Result<(Conn, Reuse), ProxyError> {
    let route = &snapshot.routes[plan.target.route];
    let (pool, codes) = (&route.targets[plan.target.target], &route.codes[plan.target.target]);
    let Some(other) = pool.pick(rng, Some(&plan.backend)).cloned() else {
        return Err(fail(&mut plan.exchange, UpstreamFailure::Connect));
    };
    count_retry(&plan.backend, RETRY_CONNECT);
    let fresh = begin_exchange(pool, codes, &other, plan.exchange.started());
    std::mem::replace(&mut plan.exchange, fresh).abandon_for_retry(UpstreamFailure::Connect);
    plan.backend = other;
    match before(&mut plan.timer, plan.backend.checkout(true, plan.target.inline)).await {
        None => Err(fail(&mut plan.exchange, UpstreamFailure::Timeout)),
        Some(Ok(checked_out)) => Ok(checked_out),
        Some(Err(err)) => {
            tracing::debug!(error = %err, "upstream connect failed on retry");
            Err(fail(&mut plan.exchange, UpstreamFailure::Connect))
        }
    }
}

/// The request could not be sent, or no answer came: say whose fault it
/// was, and record it.
fn send_failed(exchange: &mut Exchange, failure: SendFailure) -> ProxyError {
    match failure {
        // The client's side broke the exchange, not the backend.
        SendFailure::Client(client) => {
            exchange.client_failed();
            match client {
                ClientFailure::Stalled => ProxyError::RequestTimeout,
                ClientFailure::Incomplete => ProxyError::BadRequest("request body incomplete\n"),
            }
        }
        failure => fail(exchange, failure.kind()),
    }
}

/// Count a resend for `reason` in the pool's `cutover_upstream_retries_total`.
fn count_retry(backend: &Backend, reason: usize) {
    if let Some(m) = backend.metrics() {
        m.retries[reason].inc();
    }
}

/// Record `kind` on the exchange (recorded when it drops, with the request)
/// and make the client's error.
fn fail(exchange: &mut Exchange, kind: UpstreamFailure) -> ProxyError {
    exchange.failed(kind);
    ProxyError::Upstream(kind)
}

/// The pool a request goes to, and a new sticky token to set, if any.
struct Choice {
    target: usize,
    new_cookie: Option<String>,
}

/// Force rules first, then stickiness, then weights; a pool that cannot serve
/// (no eligible backend) is skipped and its share goes to the others. A force
/// rule never sends traffic to a tripped or unhealthy pool: such a request is
/// split as if no rule matched (SPEC §3).
fn choose_target(route: &Route, parts: &Parts, rng: &mut SmallRng) -> Option<Choice> {
    let serving = |t: usize| route.targets[t].can_serve();
    for (matcher, target) in &route.force {
        if force_matches(matcher, parts) && !route.targets[*target].tripped && serving(*target) {
            return Some(Choice { target: *target, new_cookie: None });
        }
    }
    let mut new_cookie = None;
    let sticky_pick = match &route.sticky {
        Some(Sticky::Cookie { name }) => match cookie(parts, name) {
            Some(value) => route.split.pick_bucket(split::bucket_of(value.as_bytes())),
            None => {
                let token = format!("{:016x}", rng.random::<u64>());
                let pick = route.split.pick_bucket(split::bucket_of(token.as_bytes()));
                new_cookie = Some(token);
                pick
            }
        },
        Some(Sticky::Header(name)) => {
            parts.headers.get(name).and_then(|v| route.split.pick_bucket(split::bucket_of(v.as_bytes())))
        }
        None => None,
    };
    let target = match sticky_pick.or_else(|| route.split.pick_weighted(rng)) {
        Some(t) if serving(t) => t,
        _ => shed(route, rng)?,
    };
    Some(Choice { target, new_cookie })
}

/// A weighted pick among the targets that can serve: the rare path when a
/// pool has no eligible backend.
fn shed(route: &Route, rng: &mut SmallRng) -> Option<usize> {
    let weights = route
        .split
        .weights()
        .iter()
        .enumerate()
        .map(|(t, &w)| if route.targets[t].can_serve() { w } else { 0 })
        .collect();
    Split::new(weights).pick_weighted(rng)
}

fn force_matches(matcher: &ForceMatch, parts: &Parts) -> bool {
    match matcher {
        ForceMatch::Header(name, value) => parts.headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()),
        ForceMatch::Cookie(name, value) => cookie(parts, name).is_some_and(|v| v == value),
    }
}

/// The value of cookie `name` across all `Cookie` headers.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| split::cookie_value(v, name))
}

/// Reject what must never be forwarded: ambiguous framing and oversized heads.
fn check_framing(parts: &Parts, max_header_bytes: usize) -> Result<(), ProxyError> {
    // One pass for the size, noting on the way whether there is any framing
    // to look at (most requests have neither header, and no lookup follows).
    let (mut head_bytes, mut te, mut cl) = (parts.uri.to_string_len_hint(), false, false);
    for (name, value) in &parts.headers {
        head_bytes += name.as_str().len() + value.len() + 4;
        te |= name == header::TRANSFER_ENCODING;
        cl |= name == header::CONTENT_LENGTH;
    }
    if head_bytes > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    // hyper decodes `chunked` only; forwarding a body still in another
    // transfer coding would hand the backend bytes it did not ask for.
    let other_coding = te
        && parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .any(|coding| !coding.trim().eq_ignore_ascii_case("chunked"));
    if other_coding {
        return Err(ProxyError::NotImplemented);
    }
    // `Content-Length` with `Transfer-Encoding` never gets here: hyper's
    // HTTP/1.1 parser drops the length (and `server`'s head scan answers
    // the `400`), and HTTP/2 refuses `Transfer-Encoding` as a
    // connection-specific field (RFC 9113 §8.2.2).
    if cl {
        let mut lengths = parts.headers.get_all(header::CONTENT_LENGTH).iter();
        let first = lengths.next();
        if lengths.any(|other| Some(other) != first) {
            return Err(ProxyError::BadRequest("conflicting content-length\n"));
        }
    }
    Ok(())
}

/// The request's host: the `Host` header, or the URI's authority (HTTP/2's
/// `:authority`, or an absolute-form HTTP/1.1 target, which wins per RFC 9112
/// §3.2.2). HTTP/1.1 without any, or with two `Host` headers, is malformed.
fn request_host(parts: &Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one host header\n"));
    }
    if let Some(authority) = parts.uri.authority() {
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    match first {
        Some(host) => Ok(Some(host.clone())),
        None if parts.version == Version::HTTP_11 => Err(ProxyError::BadRequest("missing host header\n")),
        None => Ok(None),
    }
}

/// The URI as an HTTP/1.1 origin-form target (`/path?query`).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Cheap length of a URI for the header-size check.
trait UriLen {
    fn to_string_len_hint(&self) -> usize;
}

impl UriLen for Uri {
    fn to_string_len_hint(&self) -> usize {
        self.path_and_query().map_or(1, |pq| pq.as_str().len()) + self.authority().map_or(0, |a| a.as_str().len())
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

    /// Every request's future lives in its connection's task and is moved
    /// (copied whole) a few times on its way into hyper, so it must hold the
    /// request and the plan once. The bound leaves room for other compilers,
    /// not for a second copy of either.
    #[test]
    fn a_request_future_holds_the_request_once() {
        let size = future_size(Proxy::handle);
        assert!(size <= 1_200, "Proxy::handle's future is {size} bytes");
    }
}
