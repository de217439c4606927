//! The admin API: health, readiness and (growing) control endpoints on their
//! own listener, never reachable through the traffic listeners.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;

/// What the admin handlers read and act on.
#[derive(Debug)]
pub struct AdminState {
    proxy: Arc<Proxy>,
    stopping: watch::Receiver<bool>,
}

impl AdminState {
    /// Admin state over `proxy`; `/ready` turns 503 once `stopping` is true.
    pub fn new(proxy: Arc<Proxy>, stopping: watch::Receiver<bool>) -> AdminState {
        AdminState { proxy, stopping }
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
            if *state.stopping.borrow() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/status") => {
            let revision = state.proxy.snapshot().revision;
            json(StatusCode::OK, format!("{{\"revision\":{revision}}}\n"))
        }
        _ => json(StatusCode::NOT_FOUND, "{\"error\":\"no such endpoint\"}\n".to_string()),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
