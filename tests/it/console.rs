//! The operator console in a real browser: headless Chromium, driven over
//! WebDriver (`chromedriver`, through `fantoccini`), against a real proxy
//! with real backends and a token-protected admin API. The browser loads
//! the page from the admin listener itself (`/ui`), under its Host and
//! Origin checks, and the charts read the series the runtime samples.
//!
//! The verdict and rollout fields of `/status` and `/rollouts` come from
//! other parts of the proxy; a smaller test shows the page drawing them
//! through a stand-in that adds them to the real listener's answers, so
//! the page is ready for them whatever lands first.
//!
//! The browser tests skip (saying so) when Chromium or chromedriver is not
//! installed, unless `CUTOVER_REQUIRE_CHROMIUM=1`. The page's size, its
//! offline-ness and its headers are checked without a browser.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use support::{get, get_json, Config, TestProxy, Upstream};

const TOKEN: &str = "console-test-token";

#[test]
fn the_page_is_small_offline_and_self_contained() {
    use cutover::console::{PAGE, SCRIPT, STYLE};
    let total = PAGE.len() + SCRIPT.len() + STYLE.len();
    assert!(total < 100 * 1024, "the console is {total} bytes, over 100 KiB");
    for (name, text) in [("ui.html", PAGE), ("ui.js", SCRIPT), ("ui.css", STYLE)] {
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(scheme), "{name} refers to {scheme}: the page must work air-gapped");
        }
    }
    // Nothing inline that the policy would block: no inline script or
    // style, no event-handler attributes.
    assert!(!PAGE.contains("<script>") && !PAGE.contains("<style") && !PAGE.contains("style="));
    assert!(!PAGE.contains(" onclick=") && !PAGE.contains(" onload="));
    assert!(PAGE.contains("<script src=\"/ui/app.js\">") && PAGE.contains("href=\"/ui/app.css\""));
}

/// The docs say what the code does: docs/console.md the policy and the
/// exit codes, docs/admin-api.md the series' window.
#[test]
fn the_console_doc_matches_the_code() {
    let read = |name: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap();
    let doc = read("docs/console.md");
    let policy = format!("Content-Security-Policy: {}", cutover::console::CONTENT_SECURITY_POLICY);
    assert!(doc.contains(&policy), "docs/console.md must quote the policy as served:\n{policy}");
    let api = read("docs/admin-api.md");
    let window = cutover::console::series::WINDOW_SECS;
    assert!(
        api.contains(&format!("\"window\": {window}")) && api.contains(&format!("At most {window} points")),
        "docs/admin-api.md must give the series' window, {window} s"
    );
    for code in
        [cutover::cli::EXIT_OK, cutover::cli::EXIT_REFUSED, cutover::cli::EXIT_USAGE, cutover::cli::EXIT_UNREACHABLE]
    {
        assert!(doc.contains(&format!("\n| {code} | ")), "exit code {code} is not in docs/console.md");
    }
}

/// The README shows the console: a small PNG under docs/img/.
#[test]
fn the_readme_shows_the_console() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("](docs/img/console.png)"), "README.md must embed docs/img/console.png");
    let png = std::fs::read(root.join("docs/img/console.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "docs/img/console.png is not a PNG");
    assert!(png.len() < 150 * 1024, "docs/img/console.png is {} bytes, over 150 KiB", png.len());
}

/// A real backend whose answers turn to 500 while `failing` is set.
async fn switchable(name: &str, failing: Arc<AtomicBool>) -> Upstream {
    let body = name.to_string();
    Upstream::with_handler(name, move |_req| {
        let (failing, body) = (failing.clone(), body.clone());
        async move {
            if failing.load(Ordering::SeqCst) {
                support::text(StatusCode::INTERNAL_SERVER_ERROR, "failing")
            } else {
                support::text(StatusCode::OK, body)
            }
        }
    })
    .await
}

/// A stand-in in front of the admin listener that adds the fields the
/// judgement and rollout issues bring to `/status` and `/rollouts`, and
/// passes everything else on unchanged (the page and `/series` included).
struct StandIn {
    addr: SocketAddr,
    /// `(method, path, content-type, x-cutover-admin)` of each write passed on.
    writes: Arc<Mutex<Vec<Write>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Write = (String, String, String, String);

async fn stand_in(admin: SocketAddr) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let task = tokio::spawn(async move {
        let client = support::client();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (client, seen) = (client.clone(), seen.clone());
            while connections.try_join_next().is_some() {}
            connections.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, seen) = (client.clone(), seen.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        if path == "/rollouts" {
                            return Ok::<_, Infallible>(json_response(future_rollouts()));
                        }
                        let answer = pass_on(&client, admin, req, &seen).await;
                        if path == "/status" {
                            return Ok(with_future_fields(answer).await);
                        }
                        Ok(answer)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    StandIn { addr, writes, task }
}

/// A `/rollouts` answer in the shape the rollout issue describes: until
/// that API lands, the page's rollout panel is shown this one.
fn future_rollouts() -> Value {
    json!([{"route": "shop", "state": "progressing", "step": 1, "steps": [10, 25, 50, 100], "weight": 25,
            "hold_left_ms": 42_000,
            "verdict": {"kind": "healthy", "reason": "canary healthy: 0.2% of 1,210 vs blue 0.3% of 10,890"}}])
}

/// `/status` with the judgement issue's fields on the canary's guard: a
/// verdict with its evidence, the baseline pool and the limits.
async fn with_future_fields(answer: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let bytes = answer.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut status: Value = serde_json::from_slice(&bytes).unwrap();
    for pool in status["pools"].as_array_mut().unwrap() {
        if pool["name"] == "canary" {
            let guard = pool["guard"].as_object_mut().unwrap();
            guard.insert(
                "verdict".into(),
                json!({"kind": "inconclusive", "reason": "canary inconclusive: 0.0% of 36 vs blue 0.0% of 310; needs 10 more requests"}),
            );
            guard.insert("evidence".into(), json!({"pool": {"requests": 36, "failures": 0}, "baseline": {"requests": 310, "failures": 0}, "allowed": 0.01}));
            guard.insert("baseline".into(), json!("blue"));
            guard.insert("max_error_rate".into(), json!(0.2));
            guard.insert("max_p99_ms".into(), json!(20.0));
        }
    }
    json_response(status)
}

fn json_response(body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

async fn pass_on(
    client: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    admin: SocketAddr,
    req: Request<Incoming>,
    seen: &Mutex<Vec<Write>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if parts.method != http::Method::GET {
        let path = parts.uri.path().to_string();
        seen.lock().unwrap().push((parts.method.to_string(), path, header("content-type"), header("x-cutover-admin")));
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let uri = format!("http://{admin}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut out = Request::builder().method(parts.method.clone()).uri(uri);
    for name in ["content-type", "authorization", "x-cutover-admin", "accept"] {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v);
        }
    }
    match client.request(out.body(Full::new(body)).unwrap()).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Full::new(bytes))
        }
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"admin API unreachable")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

/// Where Chromium and chromedriver are, when both are installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let driver =
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].iter().map(PathBuf::from).find(|p| p.exists())?;
    Some((chromium, driver))
}

/// chromedriver on a free loopback port, in a process group of its own so
/// the browsers it starts end with it.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(path: &Path) -> Driver {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let url = format!("http://127.0.0.1:{port}/status");
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
        if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(2), support::client().request(req)).await {
            if res.status().is_success() {
                return driver;
            }
        }
        assert!(tokio::time::Instant::now() < end, "chromedriver did not answer on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                     "--disable-dev-shm-usage", "--window-size=1280,1700",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// Wait until `script` (a JavaScript expression) is true in the page.
async fn until(browser: &Client, what: &str, script: &str) {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = browser.execute(&format!("return !!({script});"), vec![]).await.unwrap_or(Value::Bool(false));
        if v == Value::Bool(true) {
            return;
        }
        if tokio::time::Instant::now() >= end {
            // What the page showed then, for whoever reads the failure.
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(screenshot_dir().join("failure.png"), png);
            }
            panic!("timed out waiting in the page for: {what} ({script}); see failure.png beside the screenshots");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The split a bar of the page shows.
async fn shown_split(browser: &Client, route: &str, which: &str) -> Value {
    let script = format!(
        "const b = document.querySelector('[aria-labelledby=\"route-{route}-{which}-label\"]'); return b ? b.getAttribute('data-split') : null;"
    );
    let v = browser.execute(&script, vec![]).await.unwrap();
    serde_json::from_str(v.as_str().unwrap_or("null")).unwrap()
}

/// Click the element with `id`, as a user would. The page redraws its cards
/// on every poll, so an element found may be replaced before the click
/// lands: find it again then, until the deadline.
async fn click(browser: &Client, id: &str) {
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let clicked = match browser.find(Locator::Id(id)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(err) => Err(err),
        };
        match clicked {
            Ok(()) => return,
            Err(err) if std::time::Instant::now() < deadline => {
                eprintln!("click {id}: {err}; again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("click {id}: {err}"),
        }
    }
}

/// Click `button`, then confirm in the dialog.
async fn confirm(browser: &Client, button: &str) {
    click(browser, button).await;
    until(browser, "the confirmation dialog", "document.getElementById('dialog').open").await;
    click(browser, "dialog-ok").await;
    until(browser, "the dialog closed", "!document.getElementById('dialog').open").await;
}

fn route_of(status: &Value, name: &str) -> Value {
    status["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone()
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium and chromedriver, or `None` after saying the test skipped.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let found = browser();
    if found.is_none() {
        assert!(
            std::env::var("CUTOVER_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "CUTOVER_REQUIRE_CHROMIUM=1 but chromium or chromedriver is not installed"
        );
        eprintln!("skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
    }
    found
}

/// A release in progress: blue, green and a guarded canary (whose backend
/// fails while `failing` is set), route shop at 80/20 and route api, which
/// the operator already switched to green; and paced traffic on both.
struct Release {
    proxy: TestProxy,
    sent: Arc<AtomicUsize>,
    traffic: tokio::task::JoinHandle<()>,
    _backends: Vec<Upstream>,
    _secrets: tempfile::TempDir,
}

async fn release(failing: Arc<AtomicBool>) -> Release {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = switchable("canary", failing).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = Config::new()
        .raw(&format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", token_file.display()))
        .pool("blue", &[blue.addr])
        .pool("green", &[green.addr])
        .pool_with(
            "canary",
            &[canary.addr],
            "[pools.canary.guard]\nmax_error_rate = 0.2\nmax_p99_latency = \"2s\"\nwindow = \"5s\"\nmin_requests = 10\n",
        )
        .route_with("shop", "blue = 80, canary = 20", "path_prefix = \"/shop\"")
        .route("api", "blue = 100, green = 0")
        .build();
    let proxy = TestProxy::start(&config).await;

    // The api route was switched to green before the operator looks.
    let put = Request::put(proxy.admin_url("/routes/api/split"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"blue":0,"green":100}"#)))
        .unwrap();
    let res = support::client().request(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Traffic: bounded in count, paced, on both routes.
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (shop, api, sent) = (proxy.url("/shop/item"), proxy.url("/api"), sent.clone());
        tokio::spawn(async move {
            let client = support::client();
            for i in 0..6_000 {
                let url = if i % 4 == 0 { &api } else { &shop };
                let _ = get(&client, url, &[]).await;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    Release { proxy, sent, traffic, _backends: vec![blue, green, canary], _secrets: secrets }
}

/// Record, in the page, each write it sends: method, path and the two
/// headers a cross-site form cannot send.
const RECORD_WRITES: &str = r#"
    window.__writes = [];
    const send = window.fetch;
    window.fetch = (url, options) => {
        if (options && options.method && options.method !== 'GET') {
            const h = options.headers || {};
            window.__writes.push([options.method, new URL(url, location.href).pathname,
                                  h['Content-Type'] || '', h['X-Cutover-Admin'] || '']);
        }
        return send(url, options);
    };
    return true;"#;

async fn writes_sent(browser: &Client) -> Vec<Write> {
    let v = browser.execute("return window.__writes;", vec![]).await.unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_release_and_steers_it_in_a_real_browser() {
    let Some((chromium, driver_path)) = browser_or_skip() else { return };
    let _ = std::fs::remove_file(screenshot_dir().join("failure.png"));
    let failing = Arc::new(AtomicBool::new(false));
    let Release { proxy, sent, traffic, _backends, _secrets } = release(failing.clone()).await;
    let page_url = proxy.admin_url("/ui");

    // What the admin listener gives the browser: the page under its policy.
    let page = get(&support::client(), &page_url, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-security-policy"], cutover::console::CONTENT_SECURITY_POLICY);

    let driver = start_driver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = open_browser(&driver, &chromium, profile.path()).await;
    browser.goto(&page_url).await.unwrap();
    browser.execute(RECORD_WRITES, vec![]).await.unwrap();

    // The routes and splits shown are those of /status.
    until(
        &browser,
        "both route cards",
        "document.querySelector('[data-route=\"shop\"]') && document.querySelector('[data-route=\"api\"]')",
    )
    .await;
    let status = get_json(&proxy.admin_url("/status")).await;
    for route in status["routes"].as_array().unwrap() {
        let name = route["name"].as_str().unwrap();
        assert_eq!(shown_split(&browser, name, "effective").await, route["effective"], "{name} effective");
        assert_eq!(shown_split(&browser, name, "configured").await, route["configured"], "{name} configured");
    }
    until(&browser, "the override marker on api", "document.querySelector('[data-route=\"api\"] .badge.warn')").await;
    // The canary's verdict shown is the one /status gives (it moves with
    // the traffic, so the two are compared until they agree).
    let end = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let status = get_json(&proxy.admin_url("/status")).await;
        let pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").unwrap().clone();
        let kind = pool["guard"]["verdict"]["kind"].clone();
        let script = "const v = document.querySelector('[data-pool=\"canary\"] [data-verdict]'); return v ? v.getAttribute('data-verdict') : null;";
        let shown = browser.execute(script, vec![]).await.unwrap();
        if kind.is_string() && shown == kind {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the page shows verdict {shown}, /status {kind}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&browser, "the canary's backend table", "document.querySelector('[data-pool=\"canary\"] tbody tr')").await;
    until(&browser, "a revision shown", "document.getElementById('revision').textContent === '2'").await;
    // Charts drawn from the runtime's /series (needs two samples), and no
    // trip yet.
    until(
        &browser,
        "the canary's request chart",
        "document.querySelector('[data-pool=\"canary\"] svg.chart polyline.own')",
    )
    .await;
    until(
        &browser,
        "five seconds of figures",
        "document.querySelector('[data-pool=\"canary\"] svg.chart polyline.own').getAttribute('points').split(' ').length >= 5",
    )
    .await;
    assert!(sent.load(Ordering::SeqCst) > 0);
    let tripped_now = browser.execute("return !!document.querySelector('[data-tripped]');", vec![]).await.unwrap();
    assert_eq!(tripped_now, Value::Bool(false), "nothing is tripped while the canary is healthy");
    std::fs::write(screenshot_dir().join("healthy.png"), browser.screenshot().await.unwrap()).unwrap();

    // The canary fails: the trip appears without a reload.
    browser.execute("window.__sameDocument = true; return true;", vec![]).await.unwrap();
    failing.store(true, Ordering::SeqCst);
    until(&browser, "the canary's trip", "document.querySelector('[data-tripped=\"canary\"]')").await;
    until(
        &browser,
        "the trip marker on shop",
        "document.querySelector('[data-route=\"shop\"] [data-trip=\"canary\"]')",
    )
    .await;
    until(&browser, "the trip in the history", "[...document.querySelectorAll('#history li.bad')].length > 0").await;
    let same = browser.execute("return window.__sameDocument === true;", vec![]).await.unwrap();
    assert_eq!(same, Value::Bool(true), "the page updated in place, not by a reload");
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(route_of(&status, "shop")["effective"]["canary"], 0);
    until(&browser, "the effective shop split without the canary", "JSON.parse(document.querySelector('[aria-labelledby=\"route-shop-effective-label\"]').getAttribute('data-split')).canary === 0").await;
    std::fs::write(screenshot_dir().join("tripped.png"), browser.screenshot().await.unwrap()).unwrap();

    // Switch api back to blue: confirm, be asked for the token, give it.
    click(&browser, "switchback-api").await;
    until(&browser, "the confirmation dialog", "document.getElementById('dialog').open").await;
    let asked =
        browser.execute("return document.getElementById('dialog-token').checkVisibility();", vec![]).await.unwrap();
    assert_eq!(asked, Value::Bool(false), "no token asked for before the proxy wants one");
    click(&browser, "dialog-ok").await;
    until(&browser, "the token prompt after a 401", "document.getElementById('dialog-token').checkVisibility()").await;
    std::fs::write(screenshot_dir().join("token.png"), browser.screenshot().await.unwrap()).unwrap();
    browser.find(Locator::Id("token")).await.unwrap().send_keys(TOKEN).await.unwrap();
    click(&browser, "dialog-ok").await;
    until(&browser, "the dialog closed", "!document.getElementById('dialog').open").await;
    until(
        &browser,
        "api switched back to blue",
        "JSON.parse(document.querySelector('[aria-labelledby=\"route-api-effective-label\"]').getAttribute('data-split')).blue === 100",
    )
    .await;
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(route_of(&status, "api")["effective"], json!({"blue": 100, "green": 0}));
    let history = get_json(&proxy.admin_url("/history")).await;
    assert!(history[0]["cause"].as_str().unwrap().contains("switchback of route api"), "{history}");
    // The token lives in this tab's session only.
    let stored = browser
        .execute("return [sessionStorage.getItem('cutover-admin-token'), localStorage.length];", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!([TOKEN, 0]));
    // Every write carried what a cross-site form cannot send, and the
    // admin listener's Origin check let the page's own origin through.
    let writes = writes_sent(&browser).await;
    assert_eq!(writes.len(), 2, "refused once, then accepted: {writes:?}");
    for (method, path, content_type, marker) in &writes {
        let write = (method.as_str(), path.as_str(), content_type.as_str(), marker.as_str());
        assert_eq!(write, ("POST", "/routes/api/switchback", "application/json", "1"));
    }
    std::fs::write(screenshot_dir().join("switched-back.png"), browser.screenshot().await.unwrap()).unwrap();

    // Reset the canary, then set a split by hand: the token is remembered.
    failing.store(false, Ordering::SeqCst);
    confirm(&browser, "reset-canary").await;
    until(&browser, "the trip cleared", "!document.querySelector('[data-tripped]')").await;
    click(&browser, "set-shop").await;
    until(
        &browser,
        "the split editor",
        "document.getElementById('dialog').open && document.getElementById('weight-canary')",
    )
    .await;
    for (pool, weight) in [("blue", "75"), ("canary", "25")] {
        let input = browser.find(Locator::Id(&format!("weight-{pool}"))).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(weight).await.unwrap();
    }
    click(&browser, "dialog-ok").await;
    until(&browser, "the dialog closed", "!document.getElementById('dialog').open").await;
    until(
        &browser,
        "shop at 75/25",
        "JSON.parse(document.querySelector('[aria-labelledby=\"route-shop-effective-label\"]').getAttribute('data-split')).canary === 25",
    )
    .await;
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(route_of(&status, "shop")["effective"], json!({"blue": 75, "canary": 25}));

    // By keyboard: Enter opens the dialog with focus inside it, Escape
    // closes it and gives focus back to the button.
    browser.execute("document.getElementById('set-api').focus(); return true;", vec![]).await.unwrap();
    browser.active_element().await.unwrap().send_keys("\u{E007}").await.unwrap();
    until(
        &browser,
        "the editor focused",
        "document.getElementById('dialog').open && document.activeElement.id === 'weight-blue'",
    )
    .await;
    browser.active_element().await.unwrap().send_keys("\u{E00C}").await.unwrap();
    until(
        &browser,
        "focus back on the button",
        "!document.getElementById('dialog').open && document.activeElement.id === 'set-api'",
    )
    .await;
    // Polling redraws the pool cards every second; focus stays put.
    browser
        .execute(
            "window.__tripBlue = document.getElementById('trip-blue'); window.__tripBlue.focus(); return true;",
            vec![],
        )
        .await
        .unwrap();
    until(&browser, "the pools redrawn", "document.getElementById('trip-blue') !== window.__tripBlue").await;
    let focused = browser.execute("return document.activeElement.id;", vec![]).await.unwrap();
    assert_eq!(focused, json!("trip-blue"), "a redraw keeps keyboard focus");

    // A phone: one column, nothing wider than the screen.
    browser.set_window_size(390, 1400).await.unwrap();
    until(&browser, "no sideways scrolling", "document.documentElement.scrollWidth <= window.innerWidth").await;
    std::fs::write(screenshot_dir().join("phone.png"), browser.screenshot().await.unwrap()).unwrap();

    // The proxy goes away: the page says so.
    traffic.abort();
    proxy.stop().await;
    until(&browser, "the disconnected banner", "!document.getElementById('banner').hidden").await;
    std::fs::write(screenshot_dir().join("disconnected.png"), browser.screenshot().await.unwrap()).unwrap();

    let _ = browser.close().await;
    drop(driver);
}

/// The verdict with its evidence, the baseline and limit lines, and the
/// rollout panel with its commands, drawn from fields the stand-in adds to
/// the real listener's answers. Also the README's picture of the console
/// (`target/console-screenshots/readme.png`, copied to docs/img/ by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_and_rollouts_are_drawn_when_the_api_has_them() {
    let Some((chromium, driver_path)) = browser_or_skip() else { return };
    let failing = Arc::new(AtomicBool::new(false));
    let Release { proxy, traffic, _backends, _secrets, .. } = release(failing).await;
    let stand_in = stand_in(proxy.admin).await;
    let driver = start_driver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = open_browser(&driver, &chromium, profile.path()).await;
    browser.set_window_size(1100, 1700).await.unwrap();
    browser.goto(&format!("http://{}/ui", stand_in.addr)).await.unwrap();

    until(&browser, "the rollout panel", "document.querySelector('[data-route=\"shop\"] .rollout')").await;
    until(&browser, "the verdict", "document.querySelector('[data-pool=\"canary\"] [data-verdict=\"inconclusive\"]')")
        .await;
    until(&browser, "the baseline line", "document.querySelector('[data-pool=\"canary\"] svg.chart polyline.base')")
        .await;
    until(
        &browser,
        "the limit line",
        "document.querySelectorAll('[data-pool=\"canary\"] svg.chart line.limit').length === 2",
    )
    .await;
    let panel = browser.find(Locator::Css("[data-route=\"shop\"] .rollout")).await.unwrap().text().await.unwrap();
    for part in ["progressing", "2 of 4", "25%", "42s", "healthy"] {
        assert!(panel.contains(part), "{part} missing from the rollout panel: {panel}");
    }
    until(
        &browser,
        "twenty seconds of figures",
        "document.querySelector('[data-pool=\"canary\"] svg.chart polyline.own').getAttribute('points').split(' ').length >= 20",
    )
    .await;
    std::fs::write(screenshot_dir().join("readme.png"), browser.screenshot().await.unwrap()).unwrap();

    // Its commands go to /routes/{route}/rollout/{command}, with the token
    // the operator gave; where the proxy has no rollout there, the dialog
    // shows the refusal.
    let set_token = format!("sessionStorage.setItem('cutover-admin-token', '{TOKEN}'); return true;");
    browser.execute(&set_token, vec![]).await.unwrap();
    click(&browser, "rollout-pause-shop").await;
    until(&browser, "the confirmation dialog", "document.getElementById('dialog').open").await;
    click(&browser, "dialog-ok").await;
    until(&browser, "a refusal shown", "/\\b4[0-9][0-9]\\b/.test(document.getElementById('dialog-error').textContent)")
        .await;
    click(&browser, "dialog-cancel").await;
    let last = stand_in.writes.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("POST", "/routes/shop/rollout/pause"));

    traffic.abort();
    let _ = browser.close().await;
    drop(driver);
    drop(stand_in);
    proxy.stop().await;
}

/// A real rollout, from the proxy's own `/rollouts`: the page draws its
/// panel, and its pause button pauses it through the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_rollout_is_drawn_and_paused_from_the_page() {
    let Some((chromium, driver_path)) = browser_or_skip() else { return };
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let config = Config::slow_rollout(stable.addr, canary.addr);
    let proxy = TestProxy::start(&config.build()).await;
    let rollouts = get_json(&proxy.admin_url("/rollouts")).await;
    assert_eq!(rollouts[0]["state"], "progressing", "the rollout started: {rollouts}");

    let driver = start_driver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = open_browser(&driver, &chromium, profile.path()).await;
    browser.goto(&proxy.admin_url("/ui")).await.unwrap();
    until(&browser, "the rollout panel", "document.querySelector('[data-route=\"shop\"] .rollout')").await;
    let panel = browser.find(Locator::Css("[data-route=\"shop\"] .rollout")).await.unwrap().text().await.unwrap();
    for part in ["progressing", "1 of 3", "25%"] {
        assert!(panel.contains(part), "{part} missing from the rollout panel: {panel}");
    }

    click(&browser, "rollout-pause-shop").await;
    until(&browser, "the confirmation dialog", "document.getElementById('dialog').open").await;
    click(&browser, "dialog-ok").await;
    until(&browser, "the dialog closed", "!document.getElementById('dialog').open").await;
    let end = tokio::time::Instant::now() + support::DEADLINE;
    while get_json(&proxy.admin_url("/rollouts")).await[0]["state"] != "paused" {
        assert!(tokio::time::Instant::now() < end, "the proxy's rollout never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until(
        &browser,
        "the panel says paused",
        "document.querySelector('[data-route=\"shop\"] .rollout').textContent.includes('paused')",
    )
    .await;

    let _ = browser.close().await;
    drop(driver);
    proxy.stop().await;
}

/// The admin listener serves the page, its assets and the series, each
/// under the policy, and the series fills from real traffic.
#[tokio::test]
async fn the_admin_listener_serves_the_page_and_the_series() {
    let blue = Upstream::named("blue").await;
    let proxy = TestProxy::start(&Config::one_pool(&[blue.addr]).build()).await;
    let client = support::client();
    for (path, kind) in [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let a = get(&client, &proxy.admin_url(path), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(a.headers["content-security-policy"], cutover::console::CONTENT_SECURITY_POLICY);
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, StatusCode::OK);
        let body = get_json(&proxy.admin_url("/series?since=0")).await;
        assert_eq!(body["window"], cutover::console::series::WINDOW_SECS);
        let points = body["pools"]["app"].as_array().into_iter().flatten();
        let counted: u64 = points.filter_map(|p| p["requests"].as_u64()).sum();
        if counted > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no requests in the series: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
}
