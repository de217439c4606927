//! Signals against the real binary: graceful shutdown on SIGTERM, a second
//! signal exits at once, SIGHUP reloads (SPEC §3 "Graceful shutdown").

use crate::support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

struct Binary {
    child: Child,
    port: u16,
    admin: u16,
    _dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
}

impl Binary {
    async fn start(config: &Config) -> Binary {
        Binary::start_with(config, &[]).await
    }

    async fn start_with(config: &Config, flags: &[&str]) -> Binary {
        // Port 0 everywhere: the binary binds and logs the real ports, so no
        // other socket on the machine can take them first.
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("cutover.toml");
        std::fs::write(&config_path, with_listeners(&config.build())).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["run", "--config"])
            .arg(&config_path)
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover");
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let (mut port, mut admin) = (None, None);
        let mut seen = Vec::new();
        let end = std::time::Instant::now() + WAIT;
        while port.is_none() || admin.is_none() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let line =
                lines_rx.recv_timeout(left).unwrap_or_else(|_| panic!("cutover never logged its listeners: {seen:#?}"));
            let addr = line.split("addr=").nth(1).and_then(|a| a.split_whitespace().next()).map(str::to_string);
            let parsed = addr.and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.port());
            if line.contains("serving traffic") {
                port = parsed;
            } else if line.contains("serving admin API") {
                admin = parsed;
            }
            seen.push(line);
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
        let bin = Binary { child, port: port.unwrap(), admin: admin.unwrap(), _dir: dir, config_path };
        let url = bin.admin_url("/ready");
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(2), client().get(url.parse().unwrap())).await
            {
                if res.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < end, "cutover never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bin
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin, path)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Wait for exit, returning the exit code.
    async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(tokio::time::Instant::now() < end, "cutover did not exit in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_pool(upstream: &Upstream) -> Config {
    Config::one_pool(&[upstream.addr])
}

async fn status_of(url: &str) -> Option<StatusCode> {
    match tokio::time::timeout(Duration::from_secs(5), client().get(url.parse().unwrap())).await {
        Ok(Ok(res)) => Some(res.status()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let release = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let (rel, rec) = (release.clone(), received.clone());
    let upstream = Upstream::with_handler("slow", move |req| {
        let (rel, rec) = (rel.clone(), rec.clone());
        async move {
            if req.uri().path() == "/slow" {
                rec.notify_one();
                rel.notified().await;
            }
            text(StatusCode::OK, "done")
        }
    })
    .await;
    let mut bin = Binary::start(&one_pool(&upstream).server("shutdown_delay = \"1s\"\ndrain_timeout = \"15s\"")).await;

    let url = bin.url("/slow");
    let slow = tokio::spawn(async move { get(&client(), &url, &[]).await });
    tokio::time::timeout(WAIT, received.notified()).await.expect("slow request never arrived");

    let started = tokio::time::Instant::now();
    bin.signal("TERM");
    // /ready flips to 503 at once, while traffic is still served during shutdown_delay.
    let end = tokio::time::Instant::now() + WAIT;
    while status_of(&bin.admin_url("/ready")).await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(tokio::time::Instant::now() < end, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if started.elapsed() < Duration::from_millis(800) {
        // Still inside shutdown_delay on any sane machine: new requests are served.
        assert_eq!(status_of(&bin.url("/fast")).await, Some(StatusCode::OK));
    }
    // After the delay the listener closes: new connections are refused.
    let end = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", bin.port)).await.is_ok() {
        assert!(tokio::time::Instant::now() < end, "listener still accepting after shutdown_delay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "listener closed before shutdown_delay");
    assert!(bin.child.try_wait().unwrap().is_none(), "exited with a request in flight");

    release.notify_one();
    let answer = tokio::time::timeout(WAIT, slow).await.expect("slow request hung").unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "done");
    // A keep-alive HTTP/1.1 client is told this connection ends.
    assert_eq!(answer.headers.get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    // Exits 0 long before drain_timeout (15 s) once nothing is in flight.
    assert_eq!(bin.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let release = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let (rel, rec) = (release.clone(), received.clone());
    let upstream = Upstream::with_handler("stuck", move |_req| {
        let (rel, rec) = (rel.clone(), rec.clone());
        async move {
            rec.notify_one();
            rel.notified().await;
            text(StatusCode::OK, "late")
        }
    })
    .await;
    let mut bin = Binary::start(&one_pool(&upstream).server("drain_timeout = \"60s\"")).await;
    let url = bin.url("/");
    let _stuck = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(60), client().get(url.parse().unwrap())).await;
    });
    tokio::time::timeout(WAIT, received.notified()).await.expect("request never arrived");
    bin.signal("TERM");
    let end = tokio::time::Instant::now() + WAIT;
    while status_of(&bin.admin_url("/ready")).await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(tokio::time::Instant::now() < end, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bin.signal("INT");
    // Far sooner than the 60 s drain_timeout.
    let code = bin.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1));
    release.notify_one();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config =
        Config::new().pool("blue", &[blue.addr]).pool("green", &[green.addr]).route("app", "blue = 1, green = 0");
    // Without the watcher, only the signal can make this reload happen.
    let bin = Binary::start_with(&config, &["--no-watch"]).await;
    assert_eq!(get(&client(), &bin.url("/"), &[]).await.body, "blue");
    let text = std::fs::read_to_string(&bin.config_path).unwrap().replace("blue = 1, green = 0", "blue = 0, green = 1");
    std::fs::write(&bin.config_path, text).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&client(), &bin.url("/"), &[]).await.body, "blue", "reloaded without a signal");
    bin.signal("HUP");
    let end = tokio::time::Instant::now() + WAIT;
    while get(&client(), &bin.url("/"), &[]).await.body != "green" {
        assert!(tokio::time::Instant::now() < end, "SIGHUP reload never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// HTTP/2 clients are told with GOAWAY: the stream in flight completes and
/// the connection then ends (without the GOAWAY it would stay open, idle, for
/// `idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_to_http2_clients_and_finishes_their_streams() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let release = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let (rel, rec) = (release.clone(), received.clone());
    let upstream = Upstream::with_handler("slow", move |_req| {
        let (rel, rec) = (rel.clone(), rec.clone());
        async move {
            rec.notify_one();
            rel.notified().await;
            text(StatusCode::OK, "done")
        }
    })
    .await;
    let mut proxy = TestProxy::start(&one_pool(&upstream).build()).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get("http://app.example/").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let in_flight = tokio::spawn(sender.send_request(request));
    tokio::time::timeout(WAIT, received.notified()).await.expect("request never reached the upstream");

    proxy.begin_stop();
    // Listeners close (no shutdown_delay here): new connections are refused.
    let end = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < end, "listener still open after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.notify_one();
    let response = tokio::time::timeout(WAIT, in_flight).await.expect("in-flight stream hung").unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::timeout(WAIT, conn).await.expect("the h2 connection never ended").unwrap().unwrap();
    assert_eq!(upstream.hits(), 1, "a stream opened after GOAWAY reached the upstream");
}

/// `workers = 1` runs a current-thread runtime (the per-core benchmark
/// configuration): it serves, reloads and shuts down like the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_proxy_serves_reloads_and_shuts_down() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config =
        Config::new().pool("blue", &[blue.addr]).pool("green", &[green.addr]).route("app", "blue = 1, green = 0");
    let mut bin = Binary::start(&config.server("workers = 1")).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &bin.url("/"), &[]).await.body, "blue");
    }
    let text = std::fs::read_to_string(&bin.config_path).unwrap().replace("blue = 1, green = 0", "blue = 0, green = 1");
    std::fs::write(&bin.config_path, text).unwrap();
    let end = tokio::time::Instant::now() + WAIT;
    while get(&client, &bin.url("/"), &[]).await.body != "green" {
        assert!(tokio::time::Instant::now() < end, "reload never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bin.signal("TERM");
    assert_eq!(bin.wait_exit(Duration::from_secs(15)).await, Some(0));
}
