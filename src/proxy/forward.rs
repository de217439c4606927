//! Forwarding a planned request, and the retry policy.
//!
//! A [`Session`] sends the request and classifies how it failed; this
//! module decides what goes again, where and how often, records each
//! outcome on the request's [`Exchange`], and turns the backend's answer
//! into the client's response.

use std::future::Future;
use std::sync::Arc;

use http::header;
use http::{Response, StatusCode, Version};
use rand::rngs::SmallRng;

use super::plan::{refused, Plan};
use super::target::begin_exchange;
use crate::body::{ProxyBody, UpstreamBody};
use crate::error::{ProxyError, UpstreamFailure};
use crate::exchange::Exchange;
use crate::pool::session::{before, ClientFailure, SendError, SendFailure, Session, WouldResend};
use crate::pool::{Backend, Conn, Reuse};
use crate::snapshot::Snapshot;
use crate::tunnel;

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
///   (see `Target::repeatable`): once, when it may reach a backend twice,
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
pub(super) fn forward(
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
        let mut response = 'answer: {
            let answer = loop {
                let checkout = plan.backend.checkout(!resent, plan.target.inline);
                let (conn, reuse) = match before(&mut plan.timer, checkout).await {
                    None => {
                        let err = fail(&mut plan.exchange, UpstreamFailure::Timeout);
                        break 'answer own(&snapshot, &mut plan, err);
                    }
                    Some(Ok(checked_out)) => checked_out,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "upstream connect failed");
                        if !(first && plan.target.replayable) {
                            let err = fail(&mut plan.exchange, UpstreamFailure::Connect);
                            break 'answer own(&snapshot, &mut plan, err);
                        }
                        // The rare path, boxed so it does not grow every request's future.
                        match Box::pin(connect_elsewhere(&snapshot, &mut rng, &mut plan)).await {
                            Ok(checked_out) => checked_out,
                            Err(err) => break 'answer own(&snapshot, &mut plan, err),
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
                if let Some(log) = plan.exchange.log_mut() {
                    log.sending();
                }
                let failure = match session.send(&mut plan.request, would_resend, started, &mut plan.timer).await {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        if status >= 500 {
                            // A failure is logged whatever the sampling said.
                            log_anyway(&snapshot, &mut plan);
                        }
                        plan.exchange.answered(status);
                        // A gRPC call's outcome is its `grpc-status`, not the 200.
                        if status == 200 && crate::grpc::is_grpc(answer.headers()) {
                            plan.exchange.answered_grpc(answer.headers());
                        }
                        break answer;
                    }
                    Err(SendError { failure, resendable }) => match failure {
                        SendFailure::NotSent if resendable && reuse.is_reused() => continue,
                        SendFailure::Unprocessed if resendable && would_resend.unprocessed => {
                            tracing::debug!(backend = %plan.backend.addr, "backend did not process the request; sending again");
                            count_retry(&plan.backend, RETRY_UNPROCESSED);
                            retried(&mut plan.exchange);
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
                                let err = send_failed(&mut plan.exchange, failure);
                                break 'answer own(&snapshot, &mut plan, err);
                            }
                            tracing::debug!(backend = %backend.addr, moved, "connection closed unanswered; sending again");
                            count_retry(&backend, RETRY_CLOSED_UNANSWERED);
                            retried(&mut plan.exchange);
                            resent = true;
                            continue;
                        }
                        failure => failure,
                    },
                };
                let err = send_failed(&mut plan.exchange, failure);
                break 'answer own(&snapshot, &mut plan, err);
            };
            let switching = match (plan.target.downstream_upgrade.take(), tunnels) {
                (Some(downstream), Some(tunnels)) => match answer.into_switching() {
                    Ok(switching) => Ok((switching, downstream, tunnels)),
                    Err(answer) => Err(answer),
                },
                _ => Err(answer),
            };
            match switching {
                Ok((switching, downstream, tunnels)) => tunnel::open(switching, downstream, plan.exchange, &tunnels),
                // A 101 to a request that asked for no upgrade leaves the
                // connection in a protocol nobody agreed on (the inline client
                // refuses it as it parses); dropping the answer closes it.
                Err(answer) if answer.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    tracing::debug!(backend = %plan.backend.addr, "the backend switched protocols unasked");
                    let err = fail(&mut plan.exchange, UpstreamFailure::Protocol);
                    own(&snapshot, &mut plan, err)
                }
                // Not (or no longer) an upgrade: an ordinary response. Bytes the
                // client sent after its refused upgrade request are never read.
                // The body must keep flowing: silence as long as the whole
                // request_timeout means the backend is stuck.
                Err(answer) => {
                    // Answered: nothing sends the request again, and its
                    // header map can hold the next head parsed on this
                    // thread (a response's or a request's).
                    hyper::ext::give_header_map(std::mem::take(plan.request.headers_mut()));
                    UpstreamBody::respond(answer, plan.exchange, snapshot.request_timeout, plan.timer)
                }
            }
        };
        // The proxy answers in its own HTTP version (RFC 9110 §6.2),
        // whatever the backend spoke.
        *response.version_mut() = Version::HTTP_11;
        if let Some(cookie) = plan.target.new_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        let settings = &snapshot.config.server.requests;
        if let (Some(name), Some(id)) = (&settings.request_id, plan.target.tags.request_id) {
            response.headers_mut().insert(name.clone(), id);
        }
        if let Some(name) = &settings.pool_header {
            let pool = &snapshot.routes[plan.target.route].targets[plan.target.target].name;
            if let Ok(value) = header::HeaderValue::from_str(pool) {
                response.headers_mut().insert(name.clone(), value);
            }
        }
        response
    }
}

/// The proxy answers the client itself with `err`: a failure, so the
/// request is logged whatever the sampling said, with the status it got.
fn own(snapshot: &Snapshot, plan: &mut Plan, err: ProxyError) -> Response<ProxyBody> {
    log_anyway(snapshot, plan);
    if let Some(log) = plan.exchange.log_mut() {
        log.answered_by_proxy(err.status().as_u16());
    }
    refused(err)
}

/// Log the request even if sampling left it out: it failed. Its record is
/// built now unless it was built with the plan (see `plan`).
fn log_anyway(snapshot: &Snapshot, plan: &mut Plan) {
    if let Some(log) = plan.exchange.log_mut() {
        log.keep();
        return;
    }
    match snapshot.access_log.as_ref() {
        Some(log) if plan.target.logged => {
            let pending =
                super::log::pending(snapshot, log, &plan.target, &plan.request, plan.exchange.started(), false);
            plan.exchange.set_log(pending);
        }
        _ => {}
    }
}

/// The request goes again: say so in its record.
fn retried(exchange: &mut Exchange) {
    if let Some(log) = exchange.log_mut() {
        log.retried();
    }
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
    let mut fresh = begin_exchange(pool, codes, &other, plan.exchange.started());
    plan.exchange.pass_log(&mut fresh);
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
    let mut fresh = begin_exchange(pool, codes, &other, plan.exchange.started());
    plan.exchange.pass_log(&mut fresh);
    std::mem::replace(&mut plan.exchange, fresh).abandon_for_retry(UpstreamFailure::Connect);
    retried(&mut plan.exchange);
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
