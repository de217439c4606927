//! gRPC calls through the proxy are judged by their `grpc-status` (issue 22;
//! docs/configuration.md, "gRPC answers"): a real tonic server behind the
//! proxy, a real tonic client in front, unary and server-streaming calls.
//! A canary failing every call with `INTERNAL` or `UNAVAILABLE` — in the
//! trailers, or in the headers of a trailers-only answer — is judged
//! failing and trips although every answer is an HTTP `200`; calls that
//! succeed, or fail with a client-side code, keep the canary healthy unless
//! the pool names that code; the status class and passive health see the
//! same failures.
//!
//! The messages, the service and its routing are written by hand (prost's
//! derive and tonic's server and client halves), so building the tests
//! needs no protoc.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::*;
use tonic::{Code, Status};

/// Generous: CI is a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// The request of both methods.
#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    name: String,
    /// How many replies a streaming call gets.
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// One reply.
#[derive(Clone, PartialEq, prost::Message)]
struct Said {
    #[prost(string, tag = "1")]
    text: String,
}

const SAY: &str = "/cutover.test.Echo/Say";
const COUNT: &str = "/cutover.test.Echo/Count";

/// How a backend answers every call.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `OK`, with the replies asked for.
    Ok,
    /// This code in the headers of an answer without a body (tonic's way
    /// for a handler that fails before it answers).
    TrailersOnly(Code),
    /// Headers first, then this code in the trailers (after one reply of a
    /// streaming call).
    InTrailers(Code),
}

type Replies = Pin<Box<dyn Stream<Item = Result<Said, Status>> + Send>>;

/// The unary method.
struct Say(Mode);

impl tonic::server::UnaryService<Ask> for Say {
    type Response = Said;
    type Future = std::future::Ready<Result<tonic::Response<Said>, Status>>;

    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        std::future::ready(match self.0 {
            Mode::TrailersOnly(code) => Err(Status::new(code, "unary failed")),
            _ => Ok(tonic::Response::new(Said { text: format!("hello {}", request.get_ref().name) })),
        })
    }
}

/// The server-streaming method; also serves a unary call whose status
/// comes in trailers (a reply stream that fails at once).
struct Count(Mode);

impl tonic::server::ServerStreamingService<Ask> for Count {
    type Response = Said;
    type ResponseStream = Replies;
    type Future = std::future::Ready<Result<tonic::Response<Replies>, Status>>;

    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let count = request.get_ref().count;
        let replies: Vec<Result<Said, Status>> = match self.0 {
            Mode::TrailersOnly(code) => return std::future::ready(Err(Status::new(code, "stream refused"))),
            Mode::InTrailers(code) => {
                let first = (count > 0).then(|| Ok(Said { text: "0".into() }));
                first.into_iter().chain([Err(Status::new(code, "stream failed"))]).collect()
            }
            Mode::Ok => (0..count).map(|i| Ok(Said { text: i.to_string() })).collect(),
        };
        let stream: Replies = Box::pin(futures_util::stream::iter(replies));
        std::future::ready(Ok(tonic::Response::new(stream)))
    }
}

/// A tonic gRPC server over HTTP/2 (prior knowledge), answering by `mode`.
struct GrpcBackend {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    async fn start(mode: Mode) -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let calls = counted.clone();
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(route(mode, req).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcBackend { addr, calls, task }
    }
}

/// The service's routing, as tonic's generated server does it.
async fn route(mode: Mode, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    let codec = tonic_prost::ProstCodec::<Said, Ask>::default();
    let mut grpc = tonic::server::Grpc::new(codec);
    match (req.uri().path(), mode) {
        (SAY, Mode::InTrailers(_)) => grpc.server_streaming(Count(mode), req).await,
        (SAY, _) => grpc.unary(Say(mode), req).await,
        (COUNT, _) => grpc.server_streaming(Count(mode), req).await,
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// A tonic client over HTTP/2 with prior knowledge, to `addr`.
struct GrpcClient {
    grpc: tonic::client::Grpc<Client<HttpConnector, tonic::body::Body>>,
}

impl GrpcClient {
    fn to(addr: SocketAddr) -> GrpcClient {
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        let uri: http::Uri = format!("http://{addr}").parse().unwrap();
        GrpcClient { grpc: tonic::client::Grpc::with_origin(client, uri) }
    }

    async fn say(&mut self, name: &str) -> Result<String, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Ask, Said>::default();
        let ask = Ask { name: name.into(), count: 0 };
        let call = self.grpc.unary(tonic::Request::new(ask), PathAndQuery::from_static(SAY), codec);
        let answer = tokio::time::timeout(WAIT, call).await.expect("unary call hung")?;
        Ok(answer.into_inner().text)
    }

    /// The replies of a streaming call, and how it ended.
    async fn count(&mut self, count: u32) -> (Vec<String>, Result<(), Status>) {
        if let Err(e) = self.grpc.ready().await {
            return (Vec::new(), Err(Status::unavailable(e.to_string())));
        }
        let codec = tonic_prost::ProstCodec::<Ask, Said>::default();
        let ask = Ask { name: "n".into(), count };
        let call = self.grpc.server_streaming(tonic::Request::new(ask), PathAndQuery::from_static(COUNT), codec);
        let mut stream = match tokio::time::timeout(WAIT, call).await.expect("streaming call hung") {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Err(status)),
        };
        let mut replies = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, stream.message()).await.expect("stream hung") {
                Ok(Some(said)) => replies.push(said.text),
                Ok(None) => return (replies, Ok(())),
                Err(status) => return (replies, Err(status)),
            }
        }
    }
}

/// Where a backend put the `grpc-status` of a `method` call, read on the
/// wire without tonic: `"headers"` (trailers-only) or `"trailers"`. Shows
/// the backends send both shapes the tests mean to cover.
async fn wire_shape(addr: SocketAddr, method: &str) -> &'static str {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut frame = vec![0u8, 0, 0, 0, 0];
    let ask = prost::Message::encode_to_vec(&Ask { name: "w".into(), count: 1 });
    frame[1..5].copy_from_slice(&(ask.len() as u32).to_be_bytes());
    frame.extend_from_slice(&ask);
    let req = http::Request::post(format!("http://{addr}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .unwrap();
    let res = client.request(req).await.expect("raw gRPC call");
    assert_eq!(res.status(), 200);
    if res.headers().contains_key("grpc-status") {
        return "headers";
    }
    let collected = res.into_body().collect().await.expect("raw body");
    let trailers = collected.trailers().expect("a gRPC answer without trailers or grpc-status");
    assert!(trailers.contains_key("grpc-status"), "{trailers:?}");
    "trailers"
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"].as_array().unwrap().iter().find(|p| p["name"] == name).expect("pool in status")
}

/// `stable` and `canary` (HTTP/2 backends), `canary` guarded against
/// `stable` with the extra lines `canary_extra` (pool keys) and `guard`
/// (guard keys), split 50/50.
fn config(stable: SocketAddr, canary: SocketAddr, canary_extra: &str, guard: &str) -> String {
    Config::new()
        .pool_with("stable", &[stable], "protocol = \"h2\"")
        .pool_with(
            "canary",
            &[canary],
            &format!(
                "protocol = \"h2\"\n{canary_extra}\n[pools.canary.guard]\nbaseline = \"stable\"\nmin_requests = 20\n{guard}"
            ),
        )
        .route("grpc", "stable = 50, canary = 50")
        .build()
}

/// `cutover_requests_total` of `pool` in class `code`, over its backends.
fn requests(text: &str, pool: &str, code: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("cutover_requests_total{"))
        .filter(|l| l.contains(&format!("pool=\"{pool}\"")) && l.contains(&format!("code=\"{code}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Make calls of `kind` (`"unary"` or `"stream"`) through the proxy until
/// `cond` holds of its status; every call's outcome goes to `seen`.
async fn call_until(
    proxy: &TestProxy,
    kind: &str,
    what: &str,
    mut seen: impl FnMut(Result<(), Status>),
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let mut grpc = GrpcClient::to(proxy.addr);
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..10 {
            match kind {
                "unary" => seen(grpc.say("x").await.map(|text| assert_eq!(text, "hello x"))),
                _ => {
                    let (replies, end) = grpc.count(3).await;
                    if end.is_ok() {
                        assert_eq!(replies, ["0", "1", "2"]);
                    }
                    seen(end);
                }
            }
        }
        let status = get_json(&proxy.admin_url("/status")).await;
        if cond(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < end, "never: {what}\n{status:#}");
    }
}

/// A canary failing every `kind` call by `mode` trips, judged against an
/// `OK` stable pool, and its failures show in the 5xx class.
async fn a_failing_canary_trips(kind: &str, mode: Mode, code: Code, shape: &str) {
    let stable = GrpcBackend::start(Mode::Ok).await;
    let canary = GrpcBackend::start(mode).await;
    let method = if kind == "unary" { SAY } else { COUNT };
    assert_eq!(wire_shape(canary.addr, method).await, shape, "the backend's answer is not the shape under test");
    let proxy = TestProxy::start(&config(stable.addr, canary.addr, "", "")).await;

    let mut failed = 0;
    let status = call_until(
        &proxy,
        kind,
        "the canary tripped",
        |outcome| {
            if let Err(status) = outcome {
                assert_eq!(status.code(), code, "{status:?}");
                failed += 1;
            }
        },
        |s| !pool(s, "canary")["tripped"].is_null(),
    )
    .await;
    assert!(failed > 0, "no call reached the failing canary");
    let canary_status = pool(&status, "canary");
    assert_eq!(canary_status["tripped"]["reason"], "error_increase", "{status:#}");
    assert_eq!(canary_status["guard"]["verdict"]["kind"], "failing");
    let evidence = &canary_status["guard"]["evidence"];
    assert_eq!(evidence["pool"]["failures"], evidence["pool"]["requests"], "every canary call failed: {evidence:#}");
    assert_eq!(evidence["baseline"]["failures"], 0, "{evidence:#}");

    let text = proxy.metrics().await;
    assert!(requests(&text, "canary", "5xx") > 0.0, "{text}");
    assert_eq!(requests(&text, "canary", "2xx"), 0.0, "{text}");
    assert_eq!(requests(&text, "stable", "5xx"), 0.0, "{text}");
    assert!(requests(&text, "stable", "2xx") > 0.0, "{text}");

    // Rolled back: every call now reaches the stable pool and succeeds.
    let before = canary.calls.load(Ordering::Relaxed);
    let mut grpc = GrpcClient::to(proxy.addr);
    for _ in 0..10 {
        match kind {
            "unary" => assert_eq!(grpc.say("y").await.expect("stable answers"), "hello y"),
            _ => {
                let (replies, end) = grpc.count(2).await;
                assert_eq!(replies, ["0", "1"]);
                end.expect("the stable stream ends OK");
            }
        }
    }
    assert_eq!(canary.calls.load(Ordering::Relaxed), before, "a tripped canary got calls");
    drop(stable);
}

#[tokio::test]
async fn unary_internal_in_a_trailers_only_answer_trips_the_canary() {
    a_failing_canary_trips("unary", Mode::TrailersOnly(Code::Internal), Code::Internal, "headers").await;
}

#[tokio::test]
async fn unary_unavailable_in_the_trailers_trips_the_canary() {
    a_failing_canary_trips("unary", Mode::InTrailers(Code::Unavailable), Code::Unavailable, "trailers").await;
}

#[tokio::test]
async fn a_stream_ending_internal_in_the_trailers_trips_the_canary() {
    a_failing_canary_trips("stream", Mode::InTrailers(Code::Internal), Code::Internal, "trailers").await;
}

#[tokio::test]
async fn a_stream_refused_unavailable_trailers_only_trips_the_canary() {
    a_failing_canary_trips("stream", Mode::TrailersOnly(Code::Unavailable), Code::Unavailable, "headers").await;
}

/// OK calls, unary and streaming, make a healthy canary; so do calls that
/// fail with a code the caller is to blame for (`NOT_FOUND`), which is no
/// server-side failure by default.
#[tokio::test]
async fn ok_calls_and_client_side_codes_are_healthy() {
    let stable = GrpcBackend::start(Mode::Ok).await;
    for (mode, kinds) in [(Mode::Ok, ["unary", "stream"]), (Mode::InTrailers(Code::NotFound), ["unary", "stream"])] {
        let canary = GrpcBackend::start(mode).await;
        // A wide allowance, so a healthy verdict needs few calls.
        let proxy = TestProxy::start(&config(stable.addr, canary.addr, "", "max_error_increase = 0.1")).await;
        for kind in kinds {
            let status = call_until(
                &proxy,
                kind,
                "a healthy verdict",
                |_| {},
                |s| {
                    assert!(pool(s, "canary")["tripped"].is_null(), "{mode:?} tripped the canary:\n{s:#}");
                    pool(s, "canary")["guard"]["verdict"]["kind"] == "healthy"
                },
            )
            .await;
            let evidence = &pool(&status, "canary")["guard"]["evidence"];
            assert_eq!(evidence["pool"]["failures"], 0, "{mode:?} {kind}: {evidence:#}");
            assert!(evidence["pool"]["requests"].as_u64().unwrap() >= 20, "{evidence:#}");
        }
        let text = proxy.metrics().await;
        assert_eq!(requests(&text, "canary", "5xx"), 0.0, "{mode:?}: {text}");
        assert!(requests(&text, "canary", "2xx") > 0.0, "{mode:?}: {text}");
        proxy.stop().await;
    }
}

/// A pool that names its own failure codes: `NOT_FOUND` trips it.
#[tokio::test]
async fn a_pool_may_name_its_own_failure_codes() {
    let stable = GrpcBackend::start(Mode::Ok).await;
    let canary = GrpcBackend::start(Mode::InTrailers(Code::NotFound)).await;
    let extra = "grpc_failure_codes = [\"NOT_FOUND\", \"INTERNAL\"]";
    let proxy = TestProxy::start(&config(stable.addr, canary.addr, extra, "")).await;
    let status =
        call_until(&proxy, "unary", "the canary tripped", |_| {}, |s| !pool(s, "canary")["tripped"].is_null()).await;
    assert_eq!(pool(&status, "canary")["tripped"]["reason"], "error_increase", "{status:#}");
}

/// Passive health sees failing calls: a backend failing every call is
/// ejected from its pool, and the pool's other backend takes the calls.
#[tokio::test]
async fn passive_health_ejects_a_backend_failing_every_call() {
    let good = GrpcBackend::start(Mode::Ok).await;
    let bad = GrpcBackend::start(Mode::TrailersOnly(Code::Unavailable)).await;
    let config = Config::new()
        .pool_with("app", &[good.addr, bad.addr], "protocol = \"h2\"\nlb = \"round_robin\"")
        .route("app", "app = 1")
        .build();
    let proxy = TestProxy::start(&config).await;
    let mut grpc = GrpcClient::to(proxy.addr);
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..10 {
            let _ = grpc.say("z").await;
        }
        let status = get_json(&proxy.admin_url("/status")).await;
        let backends = pool(&status, "app")["backends"].as_array().unwrap().clone();
        let ejected = |addr: SocketAddr| {
            backends.iter().any(|b| b["address"].as_str() == Some(&addr.to_string()) && b["ejected"] == true)
        };
        assert!(!ejected(good.addr), "the good backend was ejected: {status:#}");
        if ejected(bad.addr) {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the failing backend was never ejected: {status:#}");
    }
    // Ejected: the calls go to the good backend only.
    let before = bad.calls.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(grpc.say("z").await.expect("the good backend answers"), "hello z");
    }
    assert_eq!(bad.calls.load(Ordering::Relaxed), before, "an ejected backend got calls");
}
