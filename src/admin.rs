//! The admin API (SPEC §4): health, readiness, status and control, on its
//! own listener.
//!
//! The admin listener is separate from the traffic listeners by
//! construction — the traffic side has no code path to these handlers — and
//! binds loopback by default. Bodies are JSON both ways; errors are
//! `{"error": "..."}` with 400/404 as the spec says.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::{Control, ReloadCause};
use crate::runtime::Lifecycle;

/// What the admin handlers read and act on.
#[derive(Debug)]
pub struct AdminState {
    control: Arc<Control>,
    lifecycle: Lifecycle,
    reloadable: bool,
}

impl AdminState {
    /// Admin state over `control`; `/ready` follows `lifecycle`.
    pub fn new(control: Arc<Control>, lifecycle: Lifecycle, reloadable: bool) -> AdminState {
        AdminState { control, lifecycle, reloadable }
    }
}

/// Serve the admin API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req)) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
}

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/ready") => {
            if *state.lifecycle.stopping.borrow() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/status") => json_response(StatusCode::OK, &status(state)),
        (&Method::POST, "/reload") => reload(state),
        (_, "/healthz" | "/ready" | "/status" | "/reload") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    if !state.reloadable {
        return error(StatusCode::BAD_REQUEST, "this proxy was not started from a config file");
    }
    match state.control.reload(ReloadCause::Admin) {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &json!({"revision": outcome.revision(), "changed": matches!(outcome, crate::control::ReloadOutcome::Applied(_))}),
        ),
        Err(err) => error(StatusCode::BAD_REQUEST, &err.to_string()),
    }
}

fn status(state: &AdminState) -> Value {
    let snapshot = state.control.proxy().snapshot();
    let last_reload = state.control.last_reload().map(|r| {
        json!({"ok": r.ok, "time": rfc3339(r.time), "error": r.error})
    });
    let draining = state.control.draining();
    let mut pools: Vec<Value> = snapshot
        .pools
        .iter()
        .map(|pool| {
            let mut backends: Vec<Value> = pool
                .backends
                .iter()
                .map(|b| {
                    json!({"address": b.addr.to_string(), "healthy": b.is_healthy(), "draining": false, "in_flight": b.in_flight()})
                })
                .collect();
            backends.extend(draining.iter().filter(|b| b.pool == pool.name).map(|b| {
                json!({"address": b.addr.to_string(), "healthy": b.is_healthy(), "draining": true, "in_flight": b.in_flight()})
            }));
            json!({"name": &*pool.name, "backends": backends})
        })
        .collect();
    // Pools removed from the config entirely, still finishing requests.
    for b in draining.iter().filter(|b| snapshot.pool(&b.pool).is_none()) {
        pools.push(json!({"name": &*b.pool, "backends": [
            {"address": b.addr.to_string(), "healthy": b.is_healthy(), "draining": true, "in_flight": b.in_flight()}
        ]}));
    }
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|route| {
            let split: serde_json::Map<String, Value> = route
                .targets
                .iter()
                .zip(route.split.weights())
                .map(|(pool, w)| (pool.name.to_string(), json!(w)))
                .collect();
            json!({"name": &*route.name, "configured": split, "effective": split, "override": null})
        })
        .collect();
    json!({
        "revision": snapshot.revision,
        "last_reload": last_reload,
        "routes": routes,
        "pools": pools,
    })
}

/// RFC 3339 UTC with second precision (`2026-11-26T10:00:00Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
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
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_687_200);
        assert_eq!(rfc3339(t), "2026-11-26T10:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
