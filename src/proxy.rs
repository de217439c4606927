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

use crate::body::{ProxyBody, RequestBody, RequestBodyError, UpstreamBody};
use crate::config::ForceMatch;
use crate::error::{ProxyError, UpstreamFailure};
use crate::exchange::{Exchange, Recorders};
use crate::headers;
use crate::metrics::ClientTimeouts;
use crate::pool::{Backend, Conn, H1Body, H1Conn, H1Error, H1Head, Pool, Reuse};
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

/// Send the planned request and stream the answer back. A connect that
/// fails is tried once on another backend of the pool when the request may
/// be replayed; a request that could not be written on a pooled connection
/// (closed by the backend just then) goes again on a fresh one. So does,
/// once, a request that may reach the backend twice (see
/// [`Target::repeatable`]) when the pooled connection it was written on
/// closed before any answer: the backend closed it as idle while the
/// request was on its way, the race every keep-alive client meets when
/// the backend's keep-alive timeout is the shorter one. Go's
/// `http.Transport` and nginx do the same. And so does, once, a request
/// without a body that an HTTP/2 backend did not process (see
/// [`unprocessed`]), whatever its method; Go's transport does that too.
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
            let mut conn = match conn {
                Conn::Hyper(conn) => conn,
                Conn::Inline(mut conn) => match before(&mut plan.timer, conn.exchange(&plan.request)).await {
                    None => return refused(fail(&mut plan.exchange, UpstreamFailure::Timeout)),
                    Some(Ok(head)) => {
                        plan.exchange.answered(head.response.status().as_u16());
                        break Answer::Inline(head, conn);
                    }
                    // Nothing reached the backend: go again on another connection.
                    Some(Err(H1Error::NotSent(_))) if reuse.is_reused() => continue,
                    // The request is still whole in the plan, so nothing need be copied.
                    Some(Err(err @ H1Error::ClosedUnanswered(_))) if reuse.is_reused() && plan.target.repeatable => {
                        tracing::debug!(error = %err, backend = %plan.backend.addr, "pooled connection closed unanswered; sending again");
                        resent = true;
                        continue;
                    }
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, backend = %plan.backend.addr, "upstream request failed");
                        return refused(fail(&mut plan.exchange, err.failure()));
                    }
                },
            };
            // Boxed: it is rare, and inline it would grow every request's future.
            let copy = match (&conn, reuse) {
                // An HTTP/2 backend may refuse the stream unprocessed; then
                // any request with no body (`inline`: no upgrade either) may
                // go again, and its head is all of it. Once: a backend that
                // refuses it twice gets the 502.
                (crate::pool::UpstreamConn::H2(_), _) if plan.target.inline && !resent => {
                    Some(Box::new(copy_head(&plan.request)))
                }
                (_, Reuse::Pooled { last_request }) if plan.target.repeatable => {
                    worth_a_copy(last_request, plan.exchange.started()).then(|| Box::new(copy_head(&plan.request)))
                }
                _ => None,
            };
            match before(&mut plan.timer, conn.try_send_request(plan.request)).await {
                None => return refused(fail(&mut plan.exchange, UpstreamFailure::Timeout)),
                Some(Ok(response)) => {
                    plan.exchange.answered(response.status().as_u16());
                    break Answer::Hyper(response, conn);
                }
                Some(Err(mut err)) => match (err.take_message(), copy) {
                    // Nothing reached the backend: go again on a new connection.
                    (Some(request), _) if reuse.is_reused() => plan.request = request,
                    // Sent, but the backend says it did not process it: once more.
                    (None, Some(copy)) if unprocessed(err.error()) => {
                        tracing::debug!(error = %err.error(), backend = %plan.backend.addr, "backend did not process the request; sending again");
                        plan.request = *copy;
                        resent = true;
                    }
                    // Sent, but the pooled connection closed unanswered: once more, on a new one.
                    (None, Some(copy)) if matches!(reuse, Reuse::Pooled { .. }) && closed_unanswered(err.error()) => {
                        tracing::debug!(error = %err.error(), backend = %plan.backend.addr, "pooled connection closed unanswered; sending again");
                        plan.request = *copy;
                        resent = true;
                    }
                    _ => return refused(send_failed(&mut plan.exchange, &plan.backend, err.error())),
                },
            }
        };
        let mut response = match answer {
            Answer::Inline(head, conn) => {
                let body = H1Body::new(conn, &head);
                // The parse left the hop-by-hop fields out.
                let (parts, ()) = head.response.into_parts();
                let body = UpstreamBody::inline(body, plan.exchange, snapshot.request_timeout, plan.timer);
                Response::from_parts(parts, ProxyBody::Upstream(body))
            }
            Answer::Hyper(response, conn) => match (plan.target.downstream_upgrade, tunnels) {
                (Some(downstream), Some(tunnels)) if response.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                    tunnel::open(response, downstream, plan.exchange, &tunnels)
                }
                _ => {
                    // Not (or no longer) an upgrade: an ordinary response. Bytes the
                    // client sent after its refused upgrade request are never read.
                    let (mut parts, body) = response.into_parts();
                    headers::strip_hop_by_hop(&mut parts.headers);
                    // The body must keep flowing: silence as long as the whole
                    // request_timeout means the backend is stuck.
                    let body = UpstreamBody::new(body, conn, plan.exchange, snapshot.request_timeout, plan.timer);
                    Response::from_parts(parts, ProxyBody::Upstream(body))
                }
            },
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

/// A backend's answer: through hyper's client, or read inline.
enum Answer {
    Hyper(Response<Incoming>, crate::pool::UpstreamConn),
    Inline(H1Head, Box<H1Conn>),
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

/// A pooled connection idle at least this long may have been closed by the
/// backend as idle just as a request is written on it, so a request that may
/// be repeated keeps a copy of its head to send again. Backends' keep-alive
/// timeouts are a second or more (gunicorn 2 s, Node.js and Apache 5 s), so
/// this covers them with room to spare. A connection that carries a
/// request every half second or more often never pays for the copy (about
/// 6% of a request's instructions): that is every connection under load,
/// and every connection of a benchmark paced at 10 requests per second per
/// connection (with 100 ms here, that one paid it on every request).
const IDLE_BEFORE_COPY: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether a request begun at `started` on a pooled connection whose last
/// request began at `last_request` keeps a copy of its head (see
/// [`IDLE_BEFORE_COPY`]).
fn worth_a_copy(last_request: Instant, started: Instant) -> bool {
    started.saturating_duration_since(last_request) >= IDLE_BEFORE_COPY
}

/// The head of a body-less request, to send it again.
fn copy_head(request: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether a request written on a connection failed because the connection
/// closed before any of the answer came: the end of the stream, or a reset
/// (a backend that closes with the request unread in its buffer resets).
fn closed_unanswered(err: &hyper::Error) -> bool {
    use std::error::Error as _;
    if err.is_incomplete_message() {
        return true;
    }
    let io = err.source().and_then(|cause| cause.downcast_ref::<std::io::Error>());
    matches!(
        io.map(std::io::Error::kind),
        Some(
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        )
    )
}

/// Whether an HTTP/2 backend says it did not process the request, so that
/// it may go again whatever its method (RFC 9113 §8.7): it refused the
/// stream (`RST_STREAM` with `REFUSED_STREAM`, as a server does to streams
/// over its concurrency limit that the client opened before it learned the
/// limit), or its `GOAWAY` left the stream out (a server shutting down tells
/// which streams it will still answer; h2 fails only the others with the
/// `GOAWAY`'s own error). Only a `GOAWAY` without error: one with an error
/// code ends every stream still open with that error, answered ones too.
fn unprocessed(err: &hyper::Error) -> bool {
    use std::error::Error as _;
    let Some(h2) = err.source().and_then(|cause| cause.downcast_ref::<h2::Error>()) else {
        return false;
    };
    let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
    let left_out = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
    h2.is_remote() && (refused || left_out)
}

/// The request could not be sent, or no answer came: say whose fault it was.
fn send_failed(exchange: &mut Exchange, backend: &Backend, err: &hyper::Error) -> ProxyError {
    if let Some(cause) = RequestBodyError::find(err) {
        // The client's side broke the exchange, not the backend.
        tracing::debug!(error = %cause, "request body failed");
        exchange.client_failed();
        return match cause {
            RequestBodyError::Timeout(_) => ProxyError::RequestTimeout,
            RequestBodyError::Client(_) => ProxyError::BadRequest("request body incomplete\n"),
        };
    }
    let failure = UpstreamFailure::of_hyper(err);
    tracing::debug!(error = %err, backend = %backend.addr, "upstream request failed");
    fail(exchange, failure)
}

/// The output of `work`, or `None` if `timer` fires first.
fn before<F: Future>(timer: &mut Pin<Box<Sleep>>, work: F) -> Before<'_, F> {
    Before { timer, work }
}

pin_project_lite::pin_project! {
    /// [`before`]'s future: a plain struct rather than an `async fn`, which
    /// would hold `work` twice (as its argument and as the pinned local).
    struct Before<'t, F> {
        timer: &'t mut Pin<Box<Sleep>>,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for Before<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.work.poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => this.timer.as_mut().poll(cx).map(|()| None),
        }
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
    if cl {
        if te {
            return Err(ProxyError::BadRequest("both content-length and transfer-encoding\n"));
        }
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
    /// (copied whole) a few times on its way into hyper. It was 2.2 KiB
    /// while it held the request three times; 952 bytes now. The bound
    /// leaves room for other compilers, not for a second copy of the
    /// request or the plan.
    #[test]
    fn a_request_future_holds_the_request_once() {
        let size = future_size(Proxy::handle);
        assert!(size <= 1_200, "Proxy::handle's future is {size} bytes");
    }

    #[test]
    fn only_a_connection_idle_long_enough_makes_a_request_keep_a_copy() {
        let last = Instant::now();
        assert!(!worth_a_copy(last, last + std::time::Duration::from_millis(20)), "in steady use");
        assert!(!worth_a_copy(last, last + std::time::Duration::from_millis(100)), "10 requests a second");
        assert!(worth_a_copy(last, last + IDLE_BEFORE_COPY));
        assert!(worth_a_copy(last, last + std::time::Duration::from_secs(5)), "a Node.js keep-alive timeout");
        // Not a panic if the clocks disagree.
        assert!(!worth_a_copy(last + IDLE_BEFORE_COPY, last));
    }
}
