//! The demo upstreams: three small hyper servers on loopback, blue, green
//! and canary, each answering with its own name; the canary fails a fixed
//! share of its requests once the story says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::config::Backends;
use super::error::DemoError;
use super::params::FAIL_EVERY;

/// The canary's switch: once on, it fails a fixed share of requests.
#[derive(Debug, Default)]
pub(super) struct Failing {
    on: AtomicBool,
    seen: AtomicU64,
}

impl Failing {
    pub(super) fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// Whether this request fails: 3 of every 10 while on, evenly spread.
    pub(super) fn this_one(&self) -> bool {
        if !self.on.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        // Spread out rather than in a burst: requests 0, 4 and 7 of every 10.
        (n * FAIL_EVERY.0) % FAIL_EVERY.1 < FAIL_EVERY.0
    }
}

/// The three demo upstreams, each a task serving one loopback listener.
pub(super) struct Upstreams {
    blue: DemoUpstream,
    green: DemoUpstream,
    canary: DemoUpstream,
    pub(super) canary_failing: Arc<Failing>,
}

pub(super) struct DemoUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstreams {
    pub(super) async fn start() -> Result<Upstreams, DemoError> {
        let canary_failing = Arc::new(Failing::default());
        Ok(Upstreams {
            blue: DemoUpstream::start("blue", None).await?,
            green: DemoUpstream::start("green", None).await?,
            canary: DemoUpstream::start("canary", Some(canary_failing.clone())).await?,
            canary_failing,
        })
    }

    pub(super) fn addrs(&self) -> Backends {
        Backends { blue: self.blue.addr, green: self.green.addr, canary: self.canary.addr }
    }

    pub(super) async fn stop(self) {
        for mut upstream in [self.blue, self.green, self.canary] {
            upstream.task.abort();
            let _ = (&mut upstream.task).await;
        }
    }
}

/// An upstream stops with its handle, also when the demo returns early.
impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoUpstream {
    pub(super) async fn start(name: &'static str, failing: Option<Arc<Failing>>) -> Result<DemoUpstream, DemoError> {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(any).await.map_err(|source| DemoError::Bind { addr: any, source })?;
        let addr = listener.local_addr().map_err(|source| DemoError::Bind { addr: any, source })?;
        let task = tokio::spawn(serve_upstream(listener, name, failing));
        Ok(DemoUpstream { addr, task })
    }
}

/// Serve until aborted; the connections live in a `JoinSet` owned by this
/// task, so aborting it closes them too.
pub(super) async fn serve_upstream(listener: TcpListener, name: &'static str, failing: Option<Arc<Failing>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let failing = failing.clone();
                connections.spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| {
                        let fail = failing.as_ref().is_some_and(|f| f.this_one());
                        async move { Ok::<_, Infallible>(upstream_answer(name, fail)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

pub(super) fn upstream_answer(name: &str, fail: bool) -> Response<Full<Bytes>> {
    let (status, body) = if fail {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: simulated failure\n"))
    } else {
        (StatusCode::OK, format!("{name}\n"))
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_fails_three_in_ten_once_started() {
        let failing = Failing::default();
        assert!((0..100).all(|_| !failing.this_one()));
        failing.start();
        let failed = (0..1000).filter(|_| failing.this_one()).count();
        assert_eq!(failed, 300);
    }
}
