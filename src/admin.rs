//! The admin API (SPEC §4): health, readiness, metrics, status, history and
//! the switchback controls, on its own listener.
//!
//! The admin listener is separate from the traffic listeners by
//! construction — the traffic side has no code path to these handlers — and
//! binds loopback by default. Bodies are JSON both ways; errors are
//! `{"error": "..."}` with 400/401/404 as the spec says. Handlers only
//! translate HTTP to calls on [`Control`], which owns every state change, and
//! every mutation answers with the revision it made.
//!
//! A browser is a client too: any web page open on a machine that can reach
//! the admin port (a laptop with `kubectl port-forward`, a bastion host) can
//! make the browser send requests here. So the API refuses what a page can
//! send without the browser first asking the API's permission (a CORS
//! preflight, which the API never grants: it sends no `Access-Control-*`
//! header at all):
//!
//! - **Writes** (`PUT`, `POST`, `DELETE`) need `Content-Type:
//!   application/json`, an `X-Cutover-Admin` header or `Authorization:
//!   Bearer`. A cross-site form or a simple `fetch` can send none of these.
//! - **Writes with an `Origin`** other than this listener's own (as named
//!   by `Host`) are refused, `Origin: null` included.
//! - **`Host` must name this listener** (DNS rebinding: a page whose name
//!   resolves to the admin address is same-origin to the browser): any IP
//!   literal, `localhost`, or a name in `[admin] allowed_hosts`, with any
//!   port. The page's own name is none of these. `GET /healthz` and `/ready`
//!   are exempt, so no probe breaks; they tell a page nothing.
//!
//! Since the listener serves a page to browsers, it also gets the traffic
//! side's protections against clients that hold connections: a deadline for
//! a request head (a connection that sends nothing included), for a
//! connection's first request and for its idle time between requests
//! ([`idle`]), and for a write's body, a bound on the head's size and one
//! on the connections open at once, past which a new one is closed
//! unanswered. They are fixed: the admin API's clients are few and quick.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use std::collections::BTreeMap;

use crate::console::series::SharedSeries;
use crate::control::{AdminError, Control, ReloadCause, ReloadOutcome};
use crate::fleet::{Fleet, FleetOutcome};
use crate::lifecycle::{self, Lifecycle};
use crate::timestamp::rfc3339;

mod idle;
mod verdict;

pub use idle::IDLE_TIMEOUT;

/// What the admin handlers read and act on.
#[derive(Debug)]
pub struct AdminState {
    control: Arc<Control>,
    lifecycle: Lifecycle,
    reloadable: bool,
    /// The per-second figures behind the console's charts.
    series: SharedSeries,
    /// Fleet mode: where changes are shared with the other replicas.
    fleet: Option<Arc<Fleet>>,
}

impl AdminState {
    /// Admin state over `control`; `/ready` follows `lifecycle`; the
    /// console's charts read `series`.
    pub fn new(control: Arc<Control>, lifecycle: Lifecycle, reloadable: bool, series: SharedSeries) -> AdminState {
        AdminState { control, lifecycle, reloadable, series, fleet: None }
    }

    /// In fleet mode: changes are written to `fleet`, and answers say how.
    pub fn with_fleet(mut self, fleet: Option<Arc<Fleet>>) -> AdminState {
        self.fleet = fleet;
        self
    }
}

/// Serve the admin API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD_BYTES as u32);
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::warn!(limit = MAX_CONNECTIONS, "admin connection refused: too many open");
                    continue;
                };
                let state = state.clone();
                let idle = idle::Idle::new(tokio::time::Instant::now(), HEADER_READ_TIMEOUT);
                let asking = idle.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    let in_flight = asking.begin();
                    async move {
                        let response = handle(&state, req).await;
                        drop(in_flight);
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder = builder.clone();
                // A kept-alive connection (a browser's, a `--watch`) ends
                // with the listener: finished requests close it, one in
                // flight is answered first.
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    // hyper's head deadline starts once it knows the
                    // protocol; a connection that sends nothing gets the
                    // same deadline here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    tokio::pin!(conn);
                    loop {
                        // Looked at again when it passes: a request may
                        // have come and gone meanwhile.
                        let due = idle.deadline();
                        tokio::select! {
                            _ = conn.as_mut() => break,
                            _ = lifecycle::stopped(&mut stop) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                                break;
                            }
                            _ = tokio::time::sleep_until(due.unwrap_or_else(|| tokio::time::Instant::now() + idle::IDLE_TIMEOUT)) => {
                                if idle.deadline().is_some_and(|due| due <= tokio::time::Instant::now()) {
                                    // Closed as at shutdown, and dropped
                                    // (the socket with it) if even that stalls.
                                    conn.as_mut().graceful_shutdown();
                                    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, conn.as_mut()).await;
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            _ = lifecycle::stopped(&mut shutdown) => break,
        }
    }
}

/// Largest admin request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Deadline for a request head, and for the first byte of a connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a write's whole body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (hyper's read buffer; it wants at least 8 KiB).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Admin connections open at once; past it a new one is closed unanswered.
pub const MAX_CONNECTIONS: usize = 128;

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mutating = matches!(method, Method::PUT | Method::POST | Method::DELETE);
    let probe = method == Method::GET && matches!(segments.as_slice(), ["healthz" | "ready"]);
    if !probe {
        let config = state.control.proxy().snapshot().config.clone();
        if let Err(response) = check_browser(&req, &config.admin.allowed_hosts, mutating) {
            return *response;
        }
    }
    // The console's page and series are reads; answered after the Host
    // check, so a rebound name cannot read them either.
    if let Some(response) = crate::console::routes::serve(&method, req.uri(), &state.series) {
        return response;
    }
    if mutating {
        if let Err(response) = authorize(state, &req) {
            return *response;
        }
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["ready"]) => {
            if *state.lifecycle.stopping.borrow() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, ["metrics"]) => {
            let mut response = Response::new(Full::new(Bytes::from(state.control.render_metrics())));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        (&Method::GET, ["status"]) => json_response(StatusCode::OK, &status(state)),
        (&Method::GET, ["history"]) => {
            let history: Vec<Value> = state
                .control
                .history()
                .into_iter()
                .map(|rev| {
                    let splits: serde_json::Map<String, Value> =
                        rev.splits.iter().map(|(route, split)| (route.clone(), split_json(split))).collect();
                    json!({"revision": rev.revision, "time": rev.time, "cause": rev.cause, "splits": splits})
                })
                .collect();
            json_response(StatusCode::OK, &Value::Array(history))
        }
        (&Method::POST, ["reload"]) => reload(state),
        (&Method::GET, ["rollouts"]) => json_response(StatusCode::OK, &json!(state.control.rollouts())),
        (&Method::POST, ["routes", route, "rollout", command]) => match crate::rollout::Command::parse(command) {
            Some(command) => shared(state, state.control.rollout_command(route, command)).await,
            None => error(
                StatusCode::NOT_FOUND,
                "no such rollout command; use start, pause, resume, promote, abort or restart",
            ),
        },
        (&Method::PUT, ["routes", route, "split"]) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(response) => return *response,
            };
            let weights: BTreeMap<String, u32> = match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("body must be a JSON object of pool to integer weight >= 0, like {{\"blue\":0,\"green\":100}}: {e}"),
                    )
                }
            };
            shared(state, state.control.set_override(route, &weights)).await
        }
        (&Method::DELETE, ["routes", route, "split"]) => shared(state, state.control.clear_override(route)).await,
        (&Method::POST, ["routes", route, "switchback"]) => shared(state, state.control.switchback(route)).await,
        (&Method::POST, ["pools", pool, "trip"]) => shared(state, state.control.trip(pool)).await,
        (&Method::POST, ["pools", pool, "reset"]) => shared(state, state.control.reset(pool)).await,
        (_, ["healthz" | "ready" | "metrics" | "status" | "history" | "reload" | "rollouts"])
        | (_, ["routes", _, "split" | "switchback"])
        | (_, ["routes", _, "rollout", _])
        | (_, ["pools", _, "trip" | "reset"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// With `token_file` set, mutating calls must carry `Authorization: Bearer
/// <token>`. The file is read on each call, so a rotated token applies at
/// once; the comparison takes the same time wherever the first difference
/// is, and the token is never logged.
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Result<(), Box<Response<Full<Bytes>>>> {
    let config = state.control.proxy().snapshot().config.clone();
    let Some(path) = &config.admin.token_file else { return Ok(()) };
    let expected = match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            tracing::error!(path = %path.display(), "cannot read the admin token file; refusing mutating calls");
            return Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "admin token unavailable")));
        }
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(response))
    }
}

/// The header a script adds to an admin write to show it is no cross-site
/// form: a browser sends a custom header only after a CORS preflight.
pub const ADMIN_HEADER: &str = "x-cutover-admin";

/// Refuse what a web page could make a browser send (see the module doc):
/// a `Host` that does not name this listener, and for a `write`, a foreign
/// `Origin` or a request a browser sends without a preflight.
fn check_browser(
    req: &Request<Incoming>,
    allowed_hosts: &[String],
    write: bool,
) -> Result<(), Box<Response<Full<Bytes>>>> {
    let headers = req.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Box::new(error(StatusCode::BAD_REQUEST, "more than one Host header"))),
        (Some(value), None) => match value.to_str() {
            Ok(host) => Some(host),
            Err(_) => return Err(Box::new(error(StatusCode::BAD_REQUEST, "Host header is not ASCII"))),
        },
        (None, _) => None,
    };
    // HTTP/2 names the host in `:authority`, which may come with or without `Host`.
    let authority = req.uri().authority().map(|a| a.as_str());
    for name in [host, authority].into_iter().flatten() {
        if !host_allowed(name, allowed_hosts) {
            tracing::debug!(host = name, "admin API: refused a request whose Host does not name it");
            return Err(Box::new(error(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "Host \"{name}\" does not name this admin API: use its IP address, localhost, \
                     or a name listed in [admin] allowed_hosts"
                ),
            )));
        }
    }
    if !write {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = host.or(authority).is_some_and(|host| same_origin(origin.as_bytes(), host));
        if !own {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            tracing::debug!(%origin, "admin API: refused a write from another origin");
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                &format!("admin writes from another origin ({origin}) are refused: no web page may change this proxy"),
            )));
        }
    }
    if !preflighted(headers) {
        tracing::debug!("admin API: refused a write a cross-site form could send");
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "admin writes need Content-Type: application/json, an X-Cutover-Admin header or \
             Authorization: Bearer, which no cross-site web form can send; \
             e.g. curl -X POST -H 'X-Cutover-Admin: 1' ...",
        )));
    }
    Ok(())
}

/// Whether `value` (a `Host` header or an authority, port optional) names
/// this listener: an IP literal, `localhost`, or an allowed name. The port
/// is not compared: a rebinding page controls only the name, and a
/// `kubectl port-forward` puts another port in front of the listener.
fn host_allowed(value: &str, allowed_hosts: &[String]) -> bool {
    if let Some(rest) = value.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, port)| ip.parse::<std::net::Ipv6Addr>().is_ok() && valid_port_suffix(port));
    }
    let name = match value.rfind(':') {
        Some(at) if valid_port_suffix(&value[at..]) => &value[..at],
        Some(_) => return false,
        None => value,
    };
    // No name at all (`Host:` empty) is what no browser sends.
    if name.is_empty() || name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || allowed_hosts.iter().any(|allowed| name.eq_ignore_ascii_case(allowed))
}

/// `""` or `":"` followed by 1 to 5 digits.
fn valid_port_suffix(s: &str) -> bool {
    match s.strip_prefix(':') {
        None => s.is_empty(),
        Some(digits) => (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the origin whose host part
/// is `host`, as the request's `Host` names this listener.
fn same_origin(origin: &[u8], host: &str) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else { return false };
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// Whether the request carries something a browser sends cross-site only
/// after a CORS preflight: a JSON content type, the admin header, or a
/// bearer token (never sent by a browser on its own).
fn preflighted(headers: &http::HeaderMap) -> bool {
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let media = v.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        media.eq_ignore_ascii_case(b"application/json")
            || media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json")
    });
    let bearer = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().len() > 7 && v.as_bytes()[..7].eq_ignore_ascii_case(b"bearer "));
    json || bearer || headers.contains_key(ADMIN_HEADER)
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Full<Bytes>>>> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(Box::new(error(StatusCode::BAD_REQUEST, "unreadable or oversized body"))),
        Err(_) => Err(Box::new(error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"))),
    }
}

fn mutation(result: Result<u64, AdminError>) -> Response<Full<Bytes>> {
    match result {
        Ok(revision) => json_response(StatusCode::OK, &json!({"revision": revision})),
        Err(AdminError::NotFound(msg)) => error(StatusCode::NOT_FOUND, &msg),
        Err(AdminError::Invalid(msg)) => error(StatusCode::BAD_REQUEST, &msg),
        Err(AdminError::Conflict(msg)) => error(StatusCode::CONFLICT, &msg),
    }
}

/// A mutation's answer in fleet mode: the revision, and whether the change
/// is written to the fleet, pending (etcd unreachable: in force here,
/// written on reconnect) or lost to another replica's change of the same
/// state (409, with what is in force now).
async fn shared(state: &AdminState, result: Result<u64, AdminError>) -> Response<Full<Bytes>> {
    let (Some(fleet), Ok(revision)) = (&state.fleet, &result) else { return mutation(result) };
    match fleet.outcome(*revision).await {
        FleetOutcome::Unshared => mutation(result),
        FleetOutcome::Written => json_response(StatusCode::OK, &json!({"revision": revision, "fleet": "written"})),
        FleetOutcome::Pending => json_response(
            StatusCode::OK,
            &json!({
                "revision": revision,
                "fleet": "pending",
                "warning": "etcd cannot be reached: the change is in force on this replica and is written to the fleet when etcd answers",
            }),
        ),
        FleetOutcome::Conflict { current } => json_response(
            StatusCode::CONFLICT,
            &json!({
                "error": "another replica changed the same state at the same time; its change is in force on every replica and this one was not applied",
                "current": current,
            }),
        ),
    }
}

fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    if !state.reloadable {
        return error(StatusCode::BAD_REQUEST, "this proxy was not started from a config file");
    }
    match state.control.reload(ReloadCause::Admin) {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &json!({"revision": outcome.revision(), "changed": matches!(outcome, ReloadOutcome::Applied(_))}),
        ),
        Err(err) => error(StatusCode::BAD_REQUEST, &err.to_string()),
    }
}

fn split_json(split: &[(String, u32)]) -> Value {
    Value::Object(split.iter().map(|(pool, w)| (pool.clone(), json!(w))).collect())
}

fn status(state: &AdminState) -> Value {
    let snapshot = state.control.proxy().snapshot();
    let view = state.control.view();
    let last_reload =
        state.control.last_reload().map(|r| json!({"ok": r.ok, "time": rfc3339(r.time), "error": r.error}));
    let draining = state.control.draining();
    let backend_json = |b: &crate::pool::Backend, draining: bool, slow_start: f64| {
        json!({
            "address": b.addr.to_string(),
            "healthy": b.is_eligible(),
            "ejected": b.is_ejected(),
            "draining": draining,
            "in_flight": b.in_flight(),
            "slow_start": (slow_start * 1000.0).round() / 1000.0,
        })
    };
    let pool_json = |name: &str, backends: Vec<Value>| {
        let tripped = view
            .trips
            .get(name)
            .map(|t| json!({"reason": t.reason.as_str(), "detail": t.detail, "revision": t.revision}));
        let guard = view.guards.get(name).map(|g| {
            let mut guard = json!({
                "requests": g.requests,
                "failures": g.failures,
                "error_rate": (g.error_rate() * 10_000.0).round() / 10_000.0,
                "p99_ms": g.p99.map(|d| d.as_secs_f64() * 1000.0),
                "warming_excluded": view.warming_excluded.get(name).copied().unwrap_or(0),
            });
            let config = view.config.pool(name).and_then(|p| p.guard.as_ref());
            verdict::add(&mut guard, view.verdicts.get(name), config);
            guard
        });
        json!({"name": name, "tripped": tripped, "guard": guard, "backends": backends})
    };
    let mut pools: Vec<Value> = snapshot
        .pools
        .iter()
        .map(|pool| {
            let mut backends: Vec<Value> =
                pool.backends.iter().map(|b| backend_json(b, false, pool.share_factor(b))).collect();
            backends.extend(draining.iter().filter(|b| b.pool == pool.name).map(|b| backend_json(b, true, 1.0)));
            pool_json(&pool.name, backends)
        })
        .collect();
    // Pools removed from the config, still finishing requests.
    let mut gone: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for b in draining.iter().filter(|b| snapshot.pool(&b.pool).is_none()) {
        gone.entry(&b.pool).or_default().push(backend_json(b, true, 1.0));
    }
    for (name, backends) in gone {
        pools.push(pool_json(name, backends));
    }
    let routes: Vec<Value> = view
        .config
        .routes
        .iter()
        .map(|rc| {
            let effective = snapshot
                .routes
                .iter()
                .find(|r| *r.name == *rc.name)
                .map(|r| {
                    let pairs: Vec<(String, u32)> =
                        r.targets.iter().zip(r.split.weights()).map(|(p, w)| (p.name.to_string(), *w)).collect();
                    split_json(&pairs)
                })
                .unwrap_or(Value::Null);
            let override_split = view.overrides.get(&rc.name).map(|o| split_json(&o.split));
            json!({"name": rc.name, "configured": split_json(&rc.split), "effective": effective, "override": override_split})
        })
        .collect();
    let mut status = json!({
        "revision": view.revision,
        "last_reload": last_reload,
        "routes": routes,
        "pools": pools,
    });
    if let Some(fleet) = &state.fleet {
        status["fleet"] = fleet.status();
    }
    status
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_this_listener() {
        let allowed = vec!["admin.internal".to_string()];
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "10.1.2.3:19901",
            "[::1]:9901",
            "[fe80::1]",
            "localhost:9901",
            "LOCALHOST",
            "localhost.:9901",
            "admin.internal:9901",
            "Admin.Internal",
            "",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "evil.example:9901",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "[::1",
            "[::1]x",
            "a:b:c",
            "x:99999999",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
    }

    #[test]
    fn origin_must_be_the_listener_itself() {
        assert!(same_origin(b"http://127.0.0.1:9901", "127.0.0.1:9901"));
        assert!(same_origin(b"https://admin.internal", "admin.internal"));
        for refused in [&b"null"[..], b"http://evil.example", b"http://127.0.0.1:9902", b"127.0.0.1:9901"] {
            assert!(!same_origin(refused, "127.0.0.1:9901"), "{}", String::from_utf8_lossy(refused));
        }
    }

    #[test]
    fn only_non_simple_requests_pass() {
        let with = |name: &'static str, value: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            preflighted(&h)
        };
        assert!(with("content-type", "application/json"));
        assert!(with("content-type", "Application/JSON; charset=utf-8"));
        assert!(with("content-type", "application/merge-patch+json"));
        assert!(with("x-cutover-admin", "1"));
        assert!(with("authorization", "Bearer abc"));
        assert!(!with("content-type", "text/plain"));
        assert!(!with("content-type", "application/x-www-form-urlencoded"));
        assert!(!with("content-type", "multipart/form-data; boundary=x"));
        assert!(!with("content-type", "text/plain; x=application/json"));
        assert!(!with("authorization", "Basic YTpi"));
        assert!(!preflighted(&http::HeaderMap::new()));
    }
}
