//! The judgement benchmark's end-to-end half: the real `cutover` binary,
//! real backends over real sockets, fixed-rate load, and the trip time read
//! from `/status` — the scenarios of `benches/judgement.rs` as an operator
//! would see them, a few runs each.
//!
//! Each run starts a fresh `cutover run` on a config of the issue's guard
//! (`baseline = "stable"`, `max_error_increase = 0.01`,
//! `max_latency_ratio = 1.5`, `confidence = 0.99`, `max_error_rate = 0.02`,
//! `max_p99_latency = "300ms"`, `min_requests = 50`, `window = "10s"`;
//! canary 10% of the route), with two in-process HTTP/1.1 backends whose
//! failure share and delay the run changes. A load loop sends requests at
//! a fixed rate (open loop: one every 1/rate s, whatever the answers), and
//! a poll of `/status` every 50 ms notes when the canary was tripped. The
//! delay is from the change (or the proxy's first request) to the first
//! poll that shows the trip, so it includes up to 50 ms of polling and the
//! judge's 250 ms tick.
//!
//! `cargo bench --bench judgement_e2e` runs it all in about three minutes;
//! `E2E_RUNS=n` sets the runs of the short scenarios (default 3) and
//! `E2E_HEALTHY_SECS` the healthy stretch before the late failure (default
//! 60; the issue's end-to-end figure is 120).

#![allow(missing_docs)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// How one backend answers: a failure share (`500`) and a delay.
#[derive(Default)]
struct Behaviour {
    /// Failure share in millionths.
    fail_ppm: AtomicU64,
    delay_ms: AtomicU64,
}

impl Behaviour {
    fn set(&self, failures: f64, delay_ms: u64) {
        self.fail_ppm.store((failures * 1e6) as u64, Ordering::Relaxed);
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
    }
}

/// A real HTTP/1.1 backend answering by its [`Behaviour`].
struct Backend {
    addr: SocketAddr,
    behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(seed: u64) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let behaviour = Arc::new(Behaviour::default());
        let shared = behaviour.clone();
        let task = tokio::spawn(async move {
            let mut conn_seed = seed;
            while let Ok((stream, _)) = listener.accept().await {
                conn_seed += 1;
                let behaviour = shared.clone();
                let rng = Arc::new(std::sync::Mutex::new(SmallRng::seed_from_u64(conn_seed)));
                let service = hyper::service::service_fn(move |_req: http::Request<Incoming>| {
                    let behaviour = behaviour.clone();
                    let draw = rng.lock().map(|mut r| r.random::<f64>()).unwrap_or(1.0);
                    async move {
                        let delay = behaviour.delay_ms.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let failed = draw * 1e6 < behaviour.fail_ppm.load(Ordering::Relaxed) as f64;
                        let status = if failed { 500 } else { 200 };
                        let mut res = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                        *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, Infallible>(res)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, behaviour, task }
    }
}

/// The addresses a starting `cutover run` says it serves traffic and the
/// admin API on (both listen on port 0, so no other process can take a
/// port between choosing it and binding it), read from its log; the log is
/// read to its end on a thread of its own, so the child never blocks on a
/// full pipe.
fn bound_addresses(child: &mut Child) -> (SocketAddr, SocketAddr) {
    let pipe = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let kind = if line.contains("serving traffic") {
                0
            } else if line.contains("serving admin API") {
                1
            } else {
                continue;
            };
            let addr = line.split_whitespace().find_map(|word| word.strip_prefix("addr=")?.parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                let _ = tx.send((kind, addr));
            }
        }
    });
    let mut found: [Option<SocketAddr>; 2] = [None, None];
    while found.iter().any(Option::is_none) {
        let (kind, addr) =
            rx.recv_timeout(Duration::from_secs(30)).expect("cutover logs the addresses it serves on within 30 s");
        found[kind] = Some(addr);
    }
    (found[0].expect("traffic address"), found[1].expect("admin address"))
}

/// `cutover run` on the issue's guard, killed when dropped.
struct Proxy {
    child: Child,
    traffic: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    async fn start(stable: SocketAddr, canary: SocketAddr) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            r#"[server]
listen = ["127.0.0.1:0"]

[admin]
listen = "127.0.0.1:0"

[pools.stable]
backends = ["{stable}"]

[pools.canary]
backends = ["{canary}"]

[pools.canary.guard]
baseline = "stable"
max_error_increase = 0.01
max_latency_ratio = 1.5
confidence = 0.99
max_error_rate = 0.02
max_p99_latency = "300ms"
min_requests = 50
window = "10s"

[[routes]]
name = "app"
split = {{ stable = 90, canary = 10 }}
"#
        );
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, config).expect("write the config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .env("RUST_LOG", "warn,cutover::runtime=info")
            .env("NO_COLOR", "1")
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover");
        let (traffic, admin) = bound_addresses(&mut child);
        let proxy = Proxy { child, traffic, admin, _dir: dir };
        let end = Instant::now() + Duration::from_secs(30);
        while status(&proxy).await.is_none() {
            assert!(Instant::now() < end, "cutover never answered /status");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build_http()
}

async fn status(proxy: &Proxy) -> Option<serde_json::Value> {
    let req = http::Request::get(format!("http://{}/status", proxy.admin)).body(Full::new(Bytes::new())).ok()?;
    let res = tokio::time::timeout(Duration::from_secs(2), client().request(req)).await.ok()?.ok()?;
    let body = res.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Whether the canary is tripped in `status`.
fn tripped(status: &serde_json::Value) -> bool {
    status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "canary"))
        .is_some_and(|p| !p["tripped"].is_null())
}

/// Requests at `rate` a second to `proxy` until dropped.
fn load(proxy: &Proxy, rate: f64) -> tokio::task::JoinHandle<()> {
    let url: http::Uri = format!("http://{}/", proxy.traffic).parse().expect("traffic url");
    tokio::spawn(async move {
        let client = client();
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            every.tick().await;
            let client = client.clone();
            let req = http::Request::get(url.clone()).body(Full::new(Bytes::new()));
            tokio::spawn(async move {
                if let Ok(req) = req {
                    if let Ok(res) = client.request(req).await {
                        let _ = res.into_body().collect().await;
                    }
                }
            });
        }
    })
}

/// One phase of a run: how long, the request rate, and both pools'
/// failure shares and delays.
#[derive(Clone, Copy)]
struct Phase {
    secs: u64,
    rate: f64,
    canary: (f64, u64),
    stable: (f64, u64),
}

/// One run: the phases in turn; the delay from the start of the last phase
/// to the trip, `Err` with the phase index for a trip before it, or `None`.
async fn run(phases: &[Phase], seed: u64) -> Result<Option<Duration>, usize> {
    let stable = Backend::start(seed * 1_000).await;
    let canary = Backend::start(seed * 1_000 + 500).await;
    let proxy = Proxy::start(stable.addr, canary.addr).await;
    let mut outcome = Ok(None);
    'phases: for (index, phase) in phases.iter().enumerate() {
        stable.behaviour.set(phase.stable.0, phase.stable.1);
        canary.behaviour.set(phase.canary.0, phase.canary.1);
        let began = Instant::now();
        let traffic = load(&proxy, phase.rate);
        let end = began + Duration::from_secs(phase.secs);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if status(&proxy).await.as_ref().is_some_and(tripped) {
                outcome = if index + 1 == phases.len() { Ok(Some(began.elapsed())) } else { Err(index) };
                traffic.abort();
                break 'phases;
            }
        }
        traffic.abort();
    }
    drop(proxy);
    outcome
}

fn phase(secs: u64, rate: f64, canary: (f64, u64), stable: (f64, u64)) -> Phase {
    Phase { secs, rate, canary, stable }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: u64 = std::env::var("E2E_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let healthy: u64 = std::env::var("E2E_HEALTHY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let good = (0.001, 0);
    let scenarios: Vec<(String, &str, Vec<Phase>, bool, u64)> = vec![
        (
            "new version fails 5% from its start, 200 req/s".into(),
            "trip ≤ 5 s",
            vec![phase(30, 200.0, (0.05, 0), good)],
            true,
            runs,
        ),
        (
            "new version fails 20% from its start, 200 req/s".into(),
            "trip ≤ 2 s",
            vec![phase(15, 200.0, (0.20, 0), good)],
            true,
            runs,
        ),
        (
            format!("{healthy} s healthy, then 5%, 200 req/s"),
            "trip ≤ 10 s after the change",
            vec![phase(healthy, 200.0, good, good), phase(30, 200.0, (0.05, 0), good)],
            true,
            1,
        ),
        (
            "new version's answers take 300 ms, baseline's ~0 ms, 200 req/s".into(),
            "trip ≤ 2 s",
            vec![phase(15, 200.0, (0.001, 300), good)],
            true,
            runs.min(2),
        ),
        (
            "5 req/s in all, new version fails 50% from its start".into(),
            "trip ≤ 30 s",
            vec![phase(90, 5.0, (0.5, 0), good)],
            true,
            1,
        ),
        (
            "shared outage: 10 s healthy, then both pools 10% for 20 s".into(),
            "no trip",
            vec![phase(10, 200.0, good, good), phase(20, 200.0, (0.10, 0), (0.10, 0))],
            false,
            1,
        ),
    ];
    println!(
        "End-to-end ({}, `{}` profile), started at {}:",
        machine(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        cutover::timestamp::rfc3339(std::time::SystemTime::now())
    );
    println!();
    println!("| scenario (canary 10% of traffic, baseline 0.1% failures unless said) | goal | trips after | runs |");
    println!("|---|---|---|---|");
    let clock = std::time::Instant::now();
    let mut seed = 1;
    for (name, goal, phases, detect, runs) in &scenarios {
        let mut results = Vec::new();
        for _ in 0..*runs {
            seed += 1;
            results.push(run(phases, seed).await);
        }
        let text: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(Some(delay)) => format!("{:.1} s", delay.as_secs_f64()),
                Ok(None) if *detect => "not tripped".into(),
                Ok(None) => "no trip".into(),
                Err(phase) => format!("tripped in phase {} (before the change)", phase + 1),
            })
            .collect();
        println!("| {name} | {goal} | {} | {runs} |", text.join(", "));
    }
    println!();
    println!("Finished after {:.0} s; {} at the end.", clock.elapsed().as_secs_f64(), machine());
}
