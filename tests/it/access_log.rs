//! Access logs, request IDs and trace context (issue 28), read back from
//! the log file of a real proxy in front of real backends: every field of
//! a line, forced and sticky choices, retries, the proxy's own 502 and 504,
//! a WebSocket tunnel, a request that outlives a reload, sampling that keeps
//! every failure, a sink nobody reads, and the headers that join a line to
//! a backend's logs.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `config` with an `[access_log]` table (`extra` keys) writing JSON to
/// `access.log` beside the config file.
fn logged(config: Config, extra: &str) -> String {
    config.raw(&format!("[access_log]\nto = \"access.log\"\n{extra}")).build()
}

fn log_path(proxy: &TestProxy) -> PathBuf {
    proxy.dir.path().join("access.log")
}

/// The log's lines once there are at least `count`, parsed.
async fn lines(path: &Path, count: usize) -> Vec<Value> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count {
            return text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        }
        assert!(tokio::time::Instant::now() < end, "{count} lines never written; have:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The one line whose `path` is `path`.
fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(found.len(), 1, "lines for {path}: {lines:#?}");
    found[0]
}

async fn revision(proxy: &TestProxy) -> u64 {
    get_json(&proxy.admin_url("/status")).await["revision"].as_u64().expect("revision")
}

fn is_hex(value: &Value, len: usize) -> bool {
    value.as_str().is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test]
async fn a_request_line_has_every_field_and_the_ids_pass_both_ways() {
    let good = Upstream::named("good").await;
    let config = Config::one_pool(&[good.addr]).server("pool_header = \"x-cutover-pool\"");
    let proxy = TestProxy::start(&logged(config, "query = true")).await;
    let answer = get(
        &client(),
        &proxy.url("/cart?id=1"),
        &[("x-request-id", "client-id.1"), ("traceparent", TRACE), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-request-id"], "client-id.1", "the client's ID comes back");
    assert_eq!(answer.headers["x-cutover-pool"], "app");
    let seen = &good.seen()[0];
    assert_eq!(seen.headers["x-request-id"], "client-id.1", "the backend gets the client's ID");
    assert_eq!(seen.headers["traceparent"], TRACE, "a valid trace passes unchanged");
    assert_eq!(seen.headers["tracestate"], "congo=t61rcWkgMzE");

    let lines = lines(&log_path(&proxy), 1).await;
    let line = line_for(&lines, "/cart");
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{line}");
    assert_eq!(line["kind"], "request");
    assert!(line["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{line}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], proxy.addr.to_string());
    assert_eq!(line["query"], "id=1");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["bytes_out"], 4, "\"good\"");
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    let ttfb = line["upstream_ttfb_ms"].as_f64().expect("a backend answered");
    assert!(ttfb <= line["duration_ms"].as_f64().unwrap(), "{line}");
    assert_eq!(line["route"], "app");
    assert_eq!(line["pool"], "app");
    assert_eq!(line["backend"], good.addr.to_string());
    assert_eq!(line["revision"], revision(&proxy).await);
    assert_eq!(line["choice"], "weighted");
    assert_eq!(line["retries"], 0);
    assert!(line["failure"].is_null());
    assert_eq!(line["request_id"], "client-id.1");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test]
async fn ids_and_traces_are_made_when_absent_and_bad_ones_replaced() {
    let good = Upstream::named("good").await;
    let proxy = TestProxy::start(&logged(Config::one_pool(&[good.addr]), "")).await;
    let client = client();
    let made = get(&client, &proxy.url("/made"), &[]).await;
    let replaced = get(
        &client,
        &proxy.url("/replaced"),
        &[("x-request-id", "no spaces \"please\""), ("traceparent", "00-zz-bad"), ("tracestate", "congo=x")],
    )
    .await;
    let seen = good.seen();
    let lines = lines(&log_path(&proxy), 2).await;
    for (answer, seen, path) in [(&made, &seen[0], "/made"), (&replaced, &seen[1], "/replaced")] {
        let line = line_for(&lines, path);
        let id = seen.headers["x-request-id"].to_str().unwrap();
        assert!(is_hex(&Value::from(id), 32), "a new ID for {path}: {id}");
        assert_eq!(answer.headers["x-request-id"], id, "the client gets the ID the backend got");
        assert_eq!(line["request_id"], id);
        let parent = seen.headers["traceparent"].to_str().unwrap();
        assert_ne!(parent, "00-zz-bad");
        assert!(parent.starts_with("00-") && parent.ends_with("-01") && parent.len() == 55, "{parent}");
        assert_eq!(line["trace_id"], parent[3..35], "the logged trace is the one the backend got");
        assert!(seen.headers.get("tracestate").is_none(), "a broken trace's state goes with it");
    }
}

#[tokio::test]
async fn forced_sticky_and_weighted_choices_are_logged() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config = Config::new().pool("blue", &[blue.addr]).pool("green", &[green.addr]).route_with(
        "app",
        "blue = 1, green = 1",
        "sticky = { header = \"x-user\" }\n[[routes.force]]\nheader = \"x-beta\"\nvalue = \"yes\"\npool = \"green\"",
    );
    let proxy = TestProxy::start(&logged(config, "")).await;
    let client = client();
    get(&client, &proxy.url("/forced"), &[("x-beta", "yes")]).await;
    get(&client, &proxy.url("/sticky"), &[("x-user", "alice")]).await;
    get(&client, &proxy.url("/weighted"), &[]).await;
    let lines = lines(&log_path(&proxy), 3).await;
    let forced = line_for(&lines, "/forced");
    assert_eq!((&forced["choice"], &forced["pool"]), (&Value::from("forced"), &Value::from("green")));
    assert_eq!(forced["backend"], green.addr.to_string());
    assert_eq!(line_for(&lines, "/sticky")["choice"], "sticky");
    assert_eq!(line_for(&lines, "/weighted")["choice"], "weighted");
}

#[tokio::test]
async fn a_retried_request_says_so_and_names_the_backend_that_served_it() {
    let dying = RawUpstream::always(Reply::close(Vec::new())).await;
    let good = Upstream::named("good").await;
    let config =
        Config::new().pool_with("app", &[dying.addr, good.addr], "lb = \"round_robin\"").route("app", "app = 100");
    let proxy = TestProxy::start(&logged(config, "")).await;
    let client = client();
    for i in 0..2 {
        assert_eq!(get(&client, &proxy.url(&format!("/r{i}")), &[]).await.status, StatusCode::OK);
    }
    assert_eq!(dying.requests().len(), 1, "round robin sent one request to the dying backend");
    let lines = lines(&log_path(&proxy), 2).await;
    let retried: Vec<&Value> = lines.iter().filter(|l| l["retries"] == 1).collect();
    assert_eq!(retried.len(), 1, "{lines:#?}");
    assert_eq!(retried[0]["backend"], good.addr.to_string());
    assert_eq!(retried[0]["status"], 200);
    assert!(retried[0]["failure"].is_null());
    assert_eq!(lines.iter().filter(|l| l["retries"] == 0).count(), 1);
}

#[tokio::test]
async fn sampling_at_zero_still_logs_every_failure_with_its_kind() {
    let good = Upstream::named("good").await;
    let failing = Upstream::with_handler("failing", |_| async { text(StatusCode::SERVICE_UNAVAILABLE, "down") }).await;
    let slow = Upstream::with_handler("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(StatusCode::OK, "late")
    })
    .await;
    let (dead, _hold) = dead_addr();
    let config = Config::new()
        .server("request_timeout = \"500ms\"")
        .pool("good", &[good.addr])
        .pool("failing", &[failing.addr])
        .pool("slow", &[slow.addr])
        .pool("dead", &[dead])
        .route_with("dead", "dead = 1", "path_prefix = \"/dead\"")
        .route_with("slow", "slow = 1", "path_prefix = \"/slow\"")
        .route_with("failing", "failing = 1", "path_prefix = \"/failing\"")
        .route("good", "good = 1");
    let proxy = TestProxy::start(&logged(config, "sample = 0.0")).await;
    let client = client();
    for i in 0..10 {
        assert_eq!(get(&client, &proxy.url(&format!("/ok{i}")), &[]).await.status, StatusCode::OK);
    }
    assert_eq!(get(&client, &proxy.url("/dead"), &[]).await.status, StatusCode::BAD_GATEWAY);
    // With a body, the request goes through the upstream client that takes
    // it away: its record is made before it is sent.
    let upload = http::Request::post(proxy.url("/dead/upload"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"12345")))
        .unwrap();
    let uploaded = tokio::time::timeout(WAIT, client.request(upload)).await.expect("upload hung").expect("upload");
    assert_eq!(uploaded.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(get(&client, &proxy.url("/slow"), &[]).await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(get(&client, &proxy.url("/failing"), &[]).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&client, &proxy.url("/nowhere/else"), &[]).await.status, StatusCode::OK);
    // The last failure is a barrier: the writer keeps order, so once its
    // line is there every earlier request has been logged or left out.
    let lines = lines(&log_path(&proxy), 4).await;
    assert_eq!(lines.len(), 4, "only the failures: {lines:#?}");
    let upload_line = line_for(&lines, "/dead/upload");
    assert_eq!((&upload_line["method"], &upload_line["status"]), (&Value::from("POST"), &Value::from(502)));
    // No backend took the body, so none of it was read.
    assert_eq!((&upload_line["bytes_in"], &upload_line["failure"]), (&Value::from(0), &Value::from("connect")));
    let dead_line = line_for(&lines, "/dead");
    assert_eq!((&dead_line["status"], &dead_line["failure"]), (&Value::from(502), &Value::from("connect")));
    assert_eq!(dead_line["pool"], "dead");
    assert_eq!(dead_line["backend"], dead.to_string());
    assert!(dead_line["upstream_ttfb_ms"].is_null());
    let slow_line = line_for(&lines, "/slow");
    assert_eq!((&slow_line["status"], &slow_line["failure"]), (&Value::from(504), &Value::from("timeout")));
    let failing_line = line_for(&lines, "/failing");
    assert_eq!(failing_line["status"], 503);
    assert!(failing_line["failure"].is_null(), "the backend answered: {failing_line}");
    assert_eq!(failing_line["bytes_out"], 4);
}

#[tokio::test]
async fn bytes_in_counts_the_body_read_chunked_or_not() {
    // The backend reads each body whole before it answers, so every byte
    // the client sent was read and forwarded.
    let reader = Upstream::with_handler("reader", |req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt as _;
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        text(StatusCode::OK, body.len().to_string())
    })
    .await;
    let proxy = TestProxy::start(&logged(Config::one_pool(&[reader.addr]), "")).await;
    let chunked = b"POST /chunked HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let sized = b"POST /sized HTTP/1.1\r\nHost: app\r\nContent-Length: 7\r\nConnection: close\r\n\r\n1234567";
    let empty = b"GET /empty HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    for (raw, read) in [(&chunked[..], "11"), (&sized[..], "7"), (&empty[..], "0")] {
        let outcome = exchange(proxy.addr, raw).await;
        let answer = outcome.only();
        assert_eq!((answer.status, answer.body.as_slice()), (200, read.as_bytes()), "{}", outcome.raw);
    }
    let lines = lines(&log_path(&proxy), 3).await;
    // The decoded body: chunk sizes and the last chunk are framing, not body.
    assert_eq!(line_for(&lines, "/chunked")["bytes_in"], 11);
    assert_eq!(line_for(&lines, "/sized")["bytes_in"], 7);
    assert_eq!(line_for(&lines, "/empty")["bytes_in"], 0);
}

#[tokio::test]
async fn requests_refused_before_routing_get_an_id_in_their_answer_and_their_line() {
    let good = Upstream::named("good").await;
    let config = Config::new()
        .pool("app", &[good.addr])
        .route_with("app", "app = 1", "path_prefix = \"/app\"")
        .server("max_request_header_bytes = 4096");
    let proxy = TestProxy::start(&logged(config, "")).await;
    let big = "b".repeat(5000);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/nowhere", "GET /nowhere HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".into(), 404, "no_route"),
        ("/app/two-hosts", "GET /app/two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400, "bad_request"),
        (
            "/app/ambiguous",
            "POST /app/ambiguous HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into(),
            400,
            "bad_request",
        ),
        ("/app/big", format!("GET /app/big HTTP/1.1\r\nHost: app\r\nConnection: close\r\nX-Big: {big}\r\n\r\n"), 431, "headers_too_large"),
        (
            "/app/gzip",
            "POST /app/gzip HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(),
            501,
            "not_implemented",
        ),
    ];
    let mut answers = Vec::new();
    for (path, raw, status, _) in &cases {
        let outcome = exchange(proxy.addr, raw.as_bytes()).await;
        let answer = outcome.responses.first().unwrap_or_else(|| panic!("{path}: no answer: {}", outcome.raw));
        assert_eq!(answer.status, *status, "{path}: {}", outcome.raw);
        let id = answer.header("x-request-id").unwrap_or_else(|| panic!("{path}: no x-request-id: {}", outcome.raw));
        assert!(is_hex(&Value::from(id), 32), "{path}: a new ID: {id}");
        answers.push(id.to_string());
    }
    assert_eq!(good.hits(), 0, "no refused request reached the backend");
    let lines = lines(&log_path(&proxy), cases.len()).await;
    for ((path, _, status, failure), id) in cases.iter().zip(&answers) {
        let line = line_for(&lines, path);
        assert_eq!((&line["status"], &line["failure"]), (&Value::from(*status), &Value::from(*failure)), "{line}");
        assert_eq!(line["request_id"], id.as_str(), "the line has the ID the client got: {line}");
        assert!(is_hex(&line["trace_id"], 32), "a refused request has a trace ID too: {line}");
        assert!(line["pool"].is_null() && line["backend"].is_null(), "{line}");
    }
    // A client's own ID is kept on a refusal as on any request.
    let outcome =
        exchange(proxy.addr, b"GET /mine HTTP/1.1\r\nHost: app\r\nX-Request-Id: ticket-7\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(outcome.only().header("x-request-id"), Some("ticket-7"));
    let lines = self::lines(&log_path(&proxy), cases.len() + 1).await;
    assert_eq!(line_for(&lines, "/mine")["request_id"], "ticket-7");
}

/// A WebSocket echo server on its own port.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_tunnel_is_logged_when_it_closes() {
    let backend = echo_server().await;
    let proxy = TestProxy::start(&logged(Config::new().pool("ws", &[backend]).route("app", "ws = 1"), "")).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr), stream))
            .await
            .expect("handshake hung")
            .expect("handshake");
    assert!(response.headers().get("x-request-id").is_some());
    ws.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next()).await.expect("echo hung");
    assert!(matches!(echoed, Some(Ok(Message::Text(_)))), "{echoed:?}");
    // Open and carrying frames, nothing is logged yet: the record is made
    // when the tunnel closes.
    assert_eq!(std::fs::read_to_string(log_path(&proxy)).unwrap_or_default(), "");
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    drop(ws);
    let lines = lines(&log_path(&proxy), 1).await;
    let line = line_for(&lines, "/chat");
    assert_eq!(line["kind"], "tunnel");
    assert_eq!(line["status"], 101);
    assert_eq!((&line["pool"], &line["backend"]), (&Value::from("ws"), &Value::from(backend.to_string())));
    assert!(line["bytes_in"].as_u64().is_some_and(|n| n > 5), "frames went up: {line}");
    assert!(line["bytes_out"].as_u64().is_some_and(|n| n > 5), "frames came down: {line}");
}

#[tokio::test]
async fn a_request_during_a_reload_carries_the_revision_that_served_it() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let slow = Upstream::with_handler("slow", move |_| {
        let gate = held.clone();
        async move {
            let _ = gate.acquire().await;
            text(StatusCode::OK, "slow")
        }
    })
    .await;
    let other = Upstream::named("other").await;
    let config = |split: &str| {
        logged(Config::new().pool("slow", &[slow.addr]).pool("other", &[other.addr]).route("app", split), "")
    };
    let proxy = TestProxy::start(&config("slow = 1, other = 0")).await;
    let before = revision(&proxy).await;
    let url = proxy.url("/during");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    eventually(WAIT, "the request reached the backend", || slow.hits() == 1).await;
    std::fs::write(&proxy.config_path, with_listeners(&config("slow = 0, other = 1"))).unwrap();
    let end = tokio::time::Instant::now() + WAIT;
    while revision(&proxy).await == before {
        assert!(tokio::time::Instant::now() < end, "the reload never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = get(&client(), &proxy.url("/after"), &[]).await;
    assert_eq!(after.body, "other");
    gate.add_permits(1);
    assert_eq!(in_flight.await.unwrap().body, "slow");
    let lines = lines(&log_path(&proxy), 2).await;
    assert_eq!(line_for(&lines, "/during")["revision"], before);
    assert!(line_for(&lines, "/after")["revision"].as_u64().is_some_and(|r| r > before));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_sink_nobody_reads_never_holds_a_request_and_counts_its_drops() {
    use std::os::unix::fs::OpenOptionsExt;
    let good = Upstream::named("good").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // A reader that never reads: the proxy can open the pipe, and it fills.
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let config = Config::one_pool(&[good.addr])
        .raw(&format!("[access_log]\nto = \"{}\"\nqueue = 16\nquery = true", fifo.display()))
        .build();
    let proxy = TestProxy::start(&config).await;
    let client = client();
    // Far more lines than the pipe's buffer and the queue hold together.
    let long = "q".repeat(1000);
    for i in 0..400 {
        let answer = tokio::time::timeout(WAIT, get(&client, &proxy.url(&format!("/{i}?{long}")), &[]))
            .await
            .unwrap_or_else(|_| panic!("request {i} waited on the log"));
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(good.hits(), 400);
    let text = proxy.metrics().await;
    let dropped = metric(&text, "cutover_access_log_dropped_total").expect("the drop counter");
    assert!(dropped > 0.0, "drops are counted:\n{text}");
}

/// The binary, as logrotate meets it: the file is renamed, `SIGUSR1` makes
/// the proxy write to a new file at the configured path (and does not stop
/// it, as the signal's default action would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_a_renamed_file() {
    use support::process::Running;
    let good = Upstream::named("good").await;
    let dir = tempfile::tempdir().unwrap();
    // Both listeners on port 0: the binary logs the ports it got.
    let config = Config::one_pool(&[good.addr])
        .raw("[access_log]\nto = \"access.log\"\n[admin]\nlisten = \"127.0.0.1:0\"")
        .server("")
        .build();
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, config).unwrap();
    let (mut running, port) = tokio::task::block_in_place(|| {
        let mut running = Running::start(&path, &[]);
        let port = running.wait_for_port("serving traffic");
        (running, port)
    });
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let client = client();
    assert_eq!(get(&client, &url("/before"), &[]).await.status, StatusCode::OK);
    let log = dir.path().join("access.log");
    lines(&log, 1).await;
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    tokio::task::block_in_place(|| {
        running.signal("-USR1");
        running.wait_for_log("reopening the access log");
    });
    assert_eq!(get(&client, &url("/after"), &[]).await.status, StatusCode::OK);
    let fresh = lines(&log, 1).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["path"], "/after");
    let old = lines(&rotated, 1).await;
    assert_eq!((old.len(), &old[0]["path"]), (1, &Value::from("/before")));
    tokio::task::block_in_place(|| {
        running.sigterm();
        assert_eq!(running.wait_exit().code(), Some(0), "{}", running.lines.join("\n"));
    });
}

#[tokio::test]
async fn only_the_named_listeners_are_logged() {
    let good = Upstream::named("good").await;
    // Two listeners on port 0, told apart by their loopback addresses: the
    // one logged is named as configured, and each is reached at the port
    // it got.
    let config = Config::one_pool(&[good.addr])
        .raw("[access_log]\nto = \"access.log\"\nlisteners = [\"127.0.0.2:0\"]")
        .server("")
        .build()
        .replace("\"127.0.0.1:0\"", "\"127.0.0.1:0\", \"127.0.0.2:0\"");
    let proxy = TestProxy::start(&config).await;
    let [quiet, logged] = proxy.traffic[..] else { panic!("two traffic listeners: {:?}", proxy.traffic) };
    assert_eq!((quiet.ip().to_string(), logged.ip().to_string()), ("127.0.0.1".into(), "127.0.0.2".into()));
    let client = client();
    let on = |addr: std::net::SocketAddr, path: &str| format!("http://{addr}{path}");
    assert_eq!(get(&client, &on(quiet, "/quiet"), &[]).await.status, StatusCode::OK);
    assert_eq!(get(&client, &on(logged, "/logged"), &[]).await.status, StatusCode::OK);
    // Both went through: the line of the second is a barrier for the first.
    assert_eq!(good.hits(), 2);
    let lines = lines(&log_path(&proxy), 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["path"], "/logged");
}
