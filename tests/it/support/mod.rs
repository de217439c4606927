//! The shared test harness: real upstreams, real clients and a real proxy
//! on `127.0.0.1:0`. Nothing here is a mock.
//!
//! - [`Upstream`]: a hyper server answering from a handler, recording what
//!   it received — for tests about what a well-behaved backend sees.
//! - [`RawUpstream`] (`raw_upstream`): a scripted raw TCP backend, bytes in
//!   and hand-written bytes out, recording each request off the wire —
//!   for tests about framing, connection reuse and broken backends.
//! - [`client`], [`get`], [`post`], [`get_json`]: a keep-alive HTTP/1.1
//!   client; [`exchange`] and friends (`raw_client`): exact bytes on a raw
//!   socket, for requests no client library would send.
//! - [`Config`] (`config`): the one config builder.
//! - [`TestProxy`]: writes a config into a temp dir, validates it with the
//!   same loader as the binary, binds port 0 and runs `cutover::run` in the
//!   test's runtime until dropped or stopped; `process` runs the binary.
//! - [`etcd::Etcd`]: a real single-member etcd on loopback, for the
//!   fleet tests; [`relay::Relay`]: a TCP relay a test can hold, to stall
//!   one replica's traffic to it for a moment.
//! - [`eventually`], [`metric`]: waiting on a condition with a deadline,
//!   and reading one series off `/metrics`.

#![allow(dead_code, unreachable_pub)]

pub mod config;
pub mod etcd;
pub mod gate;
pub mod process;
pub mod raw_client;
pub mod raw_upstream;
pub mod relay;

#[allow(unused_imports)]
pub use config::Config;
#[allow(unused_imports)]
pub use raw_client::{exchange, exchange_within, read_one_response, read_until_closed, Outcome, RawResponse};
#[allow(unused_imports)]
pub use raw_upstream::{with_length, RawRequest, RawUpstream, Reply, OK};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything that should take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Body type of upstream handlers.
pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

/// A real HTTP server standing in for a backend.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// An upstream answering 200 with its own name.
    pub async fn named(name: &str) -> Upstream {
        let body = name.to_string();
        Upstream::with_handler(name, move |_req| {
            let body = body.clone();
            async move { text(StatusCode::OK, body) }
        })
        .await
    }

    /// An upstream that answers `in_ten` of every ten requests (the first
    /// ones of each ten, counting from its start) with `500 boom`, and the
    /// rest with `200` and its name.
    pub async fn flaky(name: &str, in_ten: usize) -> Upstream {
        let counter = Arc::new(AtomicUsize::new(0));
        let body = name.to_string();
        Upstream::with_handler(name, move |_req| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move {
                if n % 10 < in_ten {
                    text(StatusCode::INTERNAL_SERVER_ERROR, "boom")
                } else {
                    text(StatusCode::OK, body)
                }
            }
        })
        .await
    }

    /// An upstream answering with `handler`.
    pub async fn with_handler<F, Fut>(name: &str, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (handler, hits, seen) = (handler.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        seen.lock().unwrap().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, name: name.to_string(), hits, seen, task }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// What the upstream saw, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<TestBody> {
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// An address that refuses connections: a socket bound but never
/// listening, held by the returned guard so no other test's listener can be
/// given its port meanwhile.
pub fn dead_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (addr, socket)
}

/// A proxy running in this test's runtime.
pub struct TestProxy {
    /// The first traffic listener.
    pub addr: SocketAddr,
    /// Every traffic listener, in the order of `[server] listen`.
    pub traffic: Vec<SocketAddr>,
    /// The HTTPS listener, when the config has `[server.tls]`.
    pub tls_addr: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    /// Start a proxy on `config` (TOML); `[server] listen` and `[admin]`
    /// are added on port 0 when the text has none.
    pub async fn start(config: &str) -> TestProxy {
        TestProxy::start_seeded(config, Some(42)).await
    }

    /// As [`TestProxy::start`], with a chosen RNG seed.
    pub async fn start_seeded(config: &str, seed: Option<u64>) -> TestProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("cutover.toml");
        std::fs::write(&config_path, with_listeners(config)).expect("write config");
        TestProxy::start_at(dir, config_path, seed).await
    }

    /// Start a proxy on the config file already at `config_path` (inside
    /// `dir`, which the proxy keeps alive), watching it for reloads.
    pub async fn start_at(dir: tempfile::TempDir, config_path: PathBuf, seed: Option<u64>) -> TestProxy {
        let (parsed, text) =
            cutover::config::load_with_text(&config_path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let listeners = cutover::bind(&parsed).await.expect("bind proxy");
        let traffic = listeners.traffic_addrs();
        let addr = traffic[0];
        let tls_addr = listeners.tls_addr();
        let admin = listeners.admin_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let options =
            cutover::RunOptions { seed, source: Some((config_path.clone(), text)), watch: true, reload_signal: None };
        let task = tokio::spawn(cutover::run(parsed, listeners, options, async move {
            let _ = stopped.await;
        }));
        TestProxy { addr, traffic, tls_addr, admin, dir, config_path, stop: Some(stop), task: Some(task) }
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The Prometheus text of `/metrics`, fetched now.
    pub async fn metrics(&self) -> String {
        get(&client(), &self.admin_url("/metrics"), &[]).await.body
    }

    /// Ask `run` to shut down without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the traffic listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stop the proxy and wait for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `config` with `[server] listen` and `[admin] listen` on port 0 added
/// when the text has no such section.
pub fn with_listeners(config: &str) -> String {
    let mut text = String::new();
    if !config.contains("[server]") {
        text.push_str("[server]\nlisten = [\"127.0.0.1:0\"]\n");
    }
    if !config.contains("[admin]") {
        text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    }
    text.push_str(config);
    text
}

/// A keep-alive HTTP/1.1 client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A finished response: status, headers and body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// GET `url` with extra `headers`, reading the whole body.
pub async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// POST `url` with an empty body; returns status and body text. It carries
/// `X-Cutover-Admin`, as admin API writes must.
pub async fn post(url: &str) -> Answer {
    send(&client(), Request::post(url).header("x-cutover-admin", "1").body(Full::new(Bytes::new())).unwrap()).await
}

/// Send `req` and read the whole answer, within 30 s.
async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Answer {
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("read body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

/// PUT `body` as JSON to `url` (an admin API write): the status and the
/// answer's JSON (`Null` if it is none).
pub async fn put_json(url: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let req = Request::put(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let answer = send(&client(), req).await;
    (answer.status, serde_json::from_str(&answer.body).unwrap_or(serde_json::Value::Null))
}

/// Whether `/status` on `proxy` shows `pool` tripped.
pub async fn pool_tripped(proxy: &TestProxy, pool: &str) -> bool {
    let status = get_json(&proxy.admin_url("/status")).await;
    let pools = status["pools"].as_array().cloned().unwrap_or_default();
    pools.into_iter().any(|p| p["name"] == pool && !p["tripped"].is_null())
}

/// GET `url` and parse the body as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let a = get(&client(), url, &[]).await;
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {}", a.body))
}

/// The value of the first series in Prometheus `text` that starts with
/// `name_and_labels`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `cutover_client_timeouts_total{timeout="<timeout>"}` as `proxy` exports it now.
pub async fn client_timeouts(proxy: &TestProxy, timeout: &str) -> f64 {
    let metrics = get(&client(), &proxy.admin_url("/metrics"), &[]).await.body;
    let series = format!("cutover_client_timeouts_total{{timeout=\"{timeout}\"}} ");
    metric(&metrics, &series).unwrap_or_else(|| panic!("no {series}in:\n{metrics}"))
}

/// Wait until `cond` holds, polling every 20 ms, failing after `deadline`.
/// [`eventually`] with a condition that must itself wait (an HTTP call,
/// an etcd read).
pub async fn eventually_async<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !cond().await {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, what: &str, mut cond: F) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
