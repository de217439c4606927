//! `cutover demo`: a self-contained showcase of the product, run for real.
//!
//! This module owns the demo and nothing else. It starts three demo upstreams
//! on loopback (blue, green and canary, each a small hyper server answering
//! with its own name), writes a real config file into a fresh temp directory,
//! and runs the real proxy on it with [`crate::bind`] and [`crate::run`] — the
//! same code paths, the same config format and the same file watcher as
//! `cutover run`. A bounded load loop (a few keep-alive clients, ~200
//! requests a second, all to 127.0.0.1) sends traffic through the proxy, and
//! a monitor shows, live, the share of responses each pool served, its error
//! rate and p99 (measured by the load loop itself) next to the weights and
//! guard figures the proxy reports on `GET /status`.
//!
//! The story is told in phases, each announced: all traffic on blue; the demo
//! rewrites the config file to send 20% to the canary (a hot reload through
//! the file watcher, with its new revision); the canary starts failing 30% of
//! its requests and the proxy's guard trips it (the reason is read from
//! `/status`); then an operator shifts the route to green and switches back
//! through the admin API over HTTP, exactly as `curl` would. Phase lengths are
//! shares of `--duration`, and where a phase waits for the proxy (a reload, a
//! trip) it polls for the condition with a deadline rather than sleeping, so
//! a short run still shows everything.
//!
//! Only the canary's failures are staged; the proxy's part is not simulated.
//! No process is spawned: everything runs as tasks on the caller's tokio
//! runtime and is stopped before [`run`] returns — the load first, then the
//! proxy through `run`'s shutdown future, then the upstreams — and the temp
//! directory is removed, also on Ctrl-C or an error.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::ConfigError;

/// The demo's pools, in display order.
const POOLS: [&str; 3] = ["blue", "green", "canary"];
/// The route the demo config declares.
const ROUTE: &str = "shop";
/// Concurrent clients of the load loop.
const WORKERS: u32 = 4;
/// Requests per second, all workers together.
const RATE: u32 = 200;
/// Share of the canary's requests that fail once it goes bad: 3 in 10.
const FAIL_EVERY: (u64, u64) = (3, 10);
/// The canary guard's `max_error_rate`.
const MAX_ERROR_RATE: f64 = 0.05;
/// Longest wait for one admin call or one proxied request.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest `--duration` that leaves room for the whole story.
pub const MIN_DURATION: Duration = Duration::from_secs(10);

/// What `cutover demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the demo runs before it stops by itself; the phases are
    /// scaled to fit (at least [`MIN_DURATION`]).
    pub duration: Duration,
    /// Seed for the proxy's random choices (the weighted split); `None`
    /// draws one from the OS.
    pub seed: Option<u64>,
}

/// Why the demo could not run; the binary prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temp directory for the config could not be made.
    #[error("cannot create the demo directory {path}: {source}")]
    TempDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file could not be written.
    #[error("cannot write the demo config {path}: {source}")]
    WriteConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The generated config did not validate (a bug in the demo).
    #[error("the demo config is invalid: {0}")]
    Config(ConfigError),
    /// A demo upstream or the proxy could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The proxy stopped answering or answered nonsense mid-run.
    #[error("{0}")]
    Story(String),
}

/// The default log filter of the demo (when `RUST_LOG` is not set): only
/// errors while the display redraws in place on a terminal, so log lines do
/// not tear the table; warnings (the proxy's own trip log among them)
/// otherwise.
pub fn default_log_filter() -> &'static str {
    if live_display() {
        "error"
    } else {
        "warn"
    }
}

/// Redraw in place only for a person at a real terminal.
fn live_display() -> bool {
    std::io::stdout().is_terminal() && !matches!(std::env::var("TERM").as_deref(), Ok("dumb"))
}

/// Run the demo until `options.duration` has passed or Ctrl-C, and leave
/// nothing behind. Errors at start (a port that cannot be bound, a temp dir
/// that cannot be written) and a proxy that stops answering are returned.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let duration = options.duration.max(MIN_DURATION);
    let mut signals = Signals::install().map_err(DemoError::Signals)?;
    let dir = DemoDir::create()?;
    let upstreams = Upstreams::start().await?;
    let config_path = dir.path.join("cutover.toml");
    let backends = upstreams.addrs();
    write_atomically(&config_path, &config_text(&backends, &Split::BLUE_ONLY))?;
    let (config, text) = crate::config::load_with_text(&config_path).map_err(DemoError::Config)?;
    let listeners = crate::bind(&config).await.map_err(|(addr, source)| DemoError::Bind { addr, source })?;
    let proxy_addr = match listeners.traffic_addrs().first() {
        Some(addr) => *addr,
        None => return Err(DemoError::Story("the proxy has no traffic listener".into())),
    };
    let admin_addr = listeners.admin_addr().map_err(|source| DemoError::Bind { addr: config.admin.listen, source })?;

    let (stop_proxy, proxy_stopped) = oneshot::channel::<()>();
    let run_options = crate::RunOptions {
        seed: options.seed,
        source: Some((config_path.clone(), text)),
        watch: true,
        ..Default::default()
    };
    let mut proxy = tokio::spawn(crate::run(config, listeners, run_options, async move {
        let _ = proxy_stopped.await;
    }));

    let started = Instant::now();
    let live = live_display();
    let color = live && std::env::var_os("NO_COLOR").is_none();
    let screen = Arc::new(Mutex::new(Screen::new(live, color)));
    let urls = Urls { proxy: proxy_addr, admin: admin_addr };
    print_banner(&urls, &config_path, &backends, duration);

    let load = Load::start(proxy_addr);
    let admin = Admin::new(admin_addr);
    let period = if live { Duration::from_millis(500) } else { Duration::from_secs(1) };
    let monitor = tokio::spawn(monitor(load.tally.clone(), admin.clone(), screen.clone(), started, duration, period));

    let story = Story {
        admin: admin.clone(),
        screen: screen.clone(),
        config_path: config_path.clone(),
        backends,
        canary: upstreams.canary_failing.clone(),
        started,
        end: started + duration,
        plan: Plan::for_duration(duration),
        urls: urls.clone(),
    };
    // The story never outlives its duration by more than a few admin calls;
    // the grace is a backstop against a proxy that hangs.
    let hard_stop = started + duration + Duration::from_secs(15);
    let ended = tokio::select! {
        result = story.tell() => match result {
            Ok(()) => Ended::Done,
            Err(e) => Ended::Failed(e),
        },
        _ = signals.recv() => Ended::Interrupted,
        _ = tokio::time::sleep_until(hard_stop) => Ended::Failed("the story did not finish in time".into()),
    };
    if matches!(ended, Ended::Interrupted) {
        // A second signal while cleaning up ends the process at once.
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("second signal: exiting without cleaning up");
            std::process::exit(130);
        });
    }
    monitor.abort();
    let _ = monitor.await;
    let history = admin.get("/history").await.ok();
    let status = admin.get("/status").await.ok();
    let elapsed = started.elapsed();
    {
        let mut screen = lock(&screen);
        screen.freeze();
        match &ended {
            Ended::Done => screen.event(&format!("\n== the end ({:.1}s): cleaning up", elapsed.as_secs_f64())),
            Ended::Interrupted => {
                screen.event(&format!("\n== interrupted at {:.1}s: cleaning up", elapsed.as_secs_f64()))
            }
            Ended::Failed(e) => screen.event(&format!("\n== the demo failed at {:.1}s: {e}", elapsed.as_secs_f64())),
        }
    }

    // Tear down in dependency order: no more traffic, then the proxy (which
    // drains what is in flight), then what the proxy talks to.
    let totals = load.stop().await;
    drop(admin);
    let _ = stop_proxy.send(());
    let proxy_result = match tokio::time::timeout(Duration::from_secs(20), &mut proxy).await {
        Ok(Ok(Ok(()))) => "the proxy shut down cleanly".to_string(),
        Ok(Ok(Err(e))) => format!("the proxy stopped with an error: {e}"),
        Ok(Err(e)) => format!("the proxy task failed: {e}"),
        Err(_) => {
            proxy.abort();
            "the proxy did not shut down within 20s; its task was aborted".to_string()
        }
    };
    upstreams.stop().await;
    let removed = dir.remove();

    let summary = summary(&totals, elapsed, history.as_ref(), status.as_ref(), &proxy_result, &removed);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(summary.as_bytes());
    let _ = out
        .write_all(curl_lines(&urls, "While a demo runs, try by hand (this run's ports are closed now):").as_bytes());
    let _ = out.flush();
    match ended {
        Ended::Failed(e) => Err(DemoError::Story(e)),
        Ended::Done | Ended::Interrupted => Ok(()),
    }
}

/// How the story ended.
#[derive(Debug)]
enum Ended {
    /// Ran its course.
    Done,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The proxy did something the demo cannot go on from.
    Failed(String),
}

// ----- the story ---------------------------------------------------------------

/// A route split, in the demo's pool order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    blue: u32,
    green: u32,
    canary: u32,
}

impl Split {
    const BLUE_ONLY: Split = Split { blue: 100, green: 0, canary: 0 };
    const CANARY_20: Split = Split { blue: 80, green: 0, canary: 20 };
}

/// When each phase happens, as shares of the demo's duration.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    /// Phase 1: all traffic on blue.
    blue_only: Duration,
    /// Phase 2: the canary at 20%, healthy.
    canary_healthy: Duration,
    /// Phase 3: the canary fails; the trip is awaited until this much time
    /// since the start has passed, leaving the rest for the switchback.
    trip_deadline: Duration,
    /// How long to show the traffic back on blue after the trip.
    after_trip: Duration,
    /// Phase 4: how long to show the traffic on green before switching back.
    on_green: Duration,
    /// Longest wait for the file watcher to apply a rewritten config.
    reload_deadline: Duration,
}

impl Plan {
    fn for_duration(duration: Duration) -> Plan {
        let share = |s: f64| duration.mul_f64(s);
        Plan {
            blue_only: share(0.12),
            canary_healthy: share(0.15),
            trip_deadline: share(0.70),
            after_trip: share(0.10),
            on_green: share(0.12),
            reload_deadline: share(0.10).clamp(Duration::from_secs(2), Duration::from_secs(5)),
        }
    }
}

/// What the story needs.
struct Story {
    admin: Admin,
    screen: Arc<Mutex<Screen>>,
    config_path: PathBuf,
    backends: Backends,
    canary: Arc<Failing>,
    started: Instant,
    end: Instant,
    plan: Plan,
    urls: Urls,
}

impl Story {
    async fn tell(&self) -> Result<(), String> {
        let plan = self.plan;
        let status = self.admin.get("/status").await?;
        self.phase(
            "1/4",
            "blue",
            "all traffic on blue",
            &format!(
                "The config file says split = {{ blue = 100, green = 0, canary = 0 }}; revision {}.",
                revision(&status).unwrap_or(0)
            ),
        );
        self.hold(plan.blue_only).await;

        // Phase 2: a config edit, applied by the proxy's own file watcher.
        let before = revision(&status).unwrap_or(0);
        self.phase(
            "2/4",
            "canary at 20%",
            "a canary release, by editing the config file",
            &format!(
                "Rewriting {} with split = {{ blue = 80, green = 0, canary = 20 }}\n   \
                 (written to a temp file and renamed over it, as editors do; the proxy watches the file).",
                self.config_path.display()
            ),
        );
        write_atomically(&self.config_path, &config_text(&self.backends, &Split::CANARY_20))
            .map_err(|e| e.to_string())?;
        let reloaded = self.wait_for_revision_after(before, Instant::now() + plan.reload_deadline).await?;
        let revision = match reloaded {
            Some(revision) => revision,
            None => {
                self.event(&format!(
                    "   The file watcher has not applied it within {:?}; asking POST /reload instead.",
                    plan.reload_deadline
                ));
                let (code, body) = self.admin.send(Method::POST, "/reload", None).await?;
                if code != StatusCode::OK {
                    return Err(format!("POST /reload answered {code}: {body}"));
                }
                body["revision"].as_u64().unwrap_or(0)
            }
        };
        let cause = self.cause_of(revision).await;
        self.event(&format!("   Hot reload applied: revision {revision} ({cause}). No connection was dropped."));
        self.hold(plan.canary_healthy).await;

        // Phase 3: the canary goes bad; the guard must trip it by itself.
        self.phase(
            "3/4",
            "canary failing",
            "the canary goes bad",
            &format!(
                "The canary now fails {} in {} requests (HTTP 500). Its guard: max_error_rate = {MAX_ERROR_RATE}, \
                 window = \"10s\", min_requests = 50.",
                FAIL_EVERY.0, FAIL_EVERY.1
            ),
        );
        let failing_since = Instant::now();
        self.canary.start();
        let deadline = self.started + plan.trip_deadline;
        match self.wait_for_trip(deadline).await? {
            Some(trip) => {
                let after = failing_since.elapsed().as_secs_f64();
                self.event(&self.screen_alert(&format!(
                    "   >>> {:.1}s: the guard TRIPPED the canary, {after:.1}s after it started failing: \
                     {} (reason {}, revision {}).",
                    self.started.elapsed().as_secs_f64(),
                    trip.detail,
                    trip.reason,
                    trip.revision
                )));
                self.event(&format!(
                    "   Its weight is now 0: the proxy sends its share to blue. Effective split: {}.",
                    trip.effective
                ));
            }
            None => self.event("   The guard has not tripped the canary in the time this demo allows; going on."),
        }
        self.hold(plan.after_trip).await;

        // Phase 4: an operator moves traffic by the admin API, then switches back.
        self.phase("4/4", "operator", "an operator shifts to green, then switches back (admin API)", "");
        self.event(&format!(
            "   $ curl -X PUT http://{}/routes/{ROUTE}/split -d '{{\"blue\":0,\"green\":100}}'",
            self.urls.admin
        ));
        let (code, body) =
            self.admin.send(Method::PUT, &format!("/routes/{ROUTE}/split"), Some(r#"{"blue":0,"green":100}"#)).await?;
        if code != StatusCode::OK {
            return Err(format!("PUT /routes/{ROUTE}/split answered {code}: {body}"));
        }
        self.event(&format!("   {code}: {} -> revision {}", compact(&body), body["revision"]));
        lock(&self.screen).phase = "4/4 on green".into();
        self.hold(plan.on_green).await;

        self.event(&format!("   $ curl -X POST http://{}/routes/{ROUTE}/switchback", self.urls.admin));
        let (code, body) = self.admin.send(Method::POST, &format!("/routes/{ROUTE}/switchback"), None).await?;
        if code != StatusCode::OK {
            return Err(format!("POST /routes/{ROUTE}/switchback answered {code}: {body}"));
        }
        let switched = body["revision"].as_u64().unwrap_or(0);
        lock(&self.screen).phase = "4/4 switched back".into();
        let status = self.admin.get("/status").await?;
        self.event(&format!(
            "   {code}: {} -> switchback to revision {switched}; effective split now {}.",
            compact(&body),
            effective_split(&status)
        ));
        let history = self.admin.get("/history").await?;
        self.event(&format!(
            "   $ curl http://{}/history   (newest first)\n{}",
            self.urls.admin,
            history_lines(&history, 6)
        ));

        let left = self.end.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            self.event(&format!(
                "   The story is told; traffic keeps flowing for {:.0}s more. Try the curl lines above.",
                left.as_secs_f64()
            ));
        }
        tokio::time::sleep_until(self.end).await;
        Ok(())
    }

    /// Announce a phase; `short` labels it in the live table.
    fn phase(&self, number: &str, short: &str, title: &str, detail: &str) {
        let mut screen = lock(&self.screen);
        screen.phase = format!("{number} {short}");
        let at = self.started.elapsed().as_secs_f64();
        let mut text = screen.bold(&format!("\n== phase {number} ({at:.1}s): {title}"));
        if !detail.is_empty() {
            text.push_str("\n   ");
            text.push_str(detail);
        }
        screen.event(&text);
    }

    fn event(&self, text: &str) {
        lock(&self.screen).event(text);
    }

    fn screen_alert(&self, text: &str) -> String {
        lock(&self.screen).alert(text)
    }

    /// Sleep `length`, but never past the end of the demo.
    async fn hold(&self, length: Duration) {
        tokio::time::sleep_until((Instant::now() + length).min(self.end)).await;
    }

    /// Poll `/status` until its revision is past `before` and the canary
    /// has weight in the route; `None` at the deadline.
    async fn wait_for_revision_after(&self, before: u64, deadline: Instant) -> Result<Option<u64>, String> {
        loop {
            let status = self.admin.get("/status").await?;
            if let Some(revision) = revision(&status).filter(|r| *r > before) {
                if effective_weight(&status, "canary").unwrap_or(0) > 0 {
                    return Ok(Some(revision));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll `/status` until the canary shows a trip; `None` at the deadline.
    async fn wait_for_trip(&self, deadline: Instant) -> Result<Option<TripSeen>, String> {
        loop {
            let status = self.admin.get("/status").await?;
            if let Some(trip) = trip_of(&status, "canary") {
                return Ok(Some(trip));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cause `/history` gives for `revision`.
    async fn cause_of(&self, revision: u64) -> String {
        let Ok(history) = self.admin.get("/history").await else { return "cause unknown".into() };
        history
            .as_array()
            .and_then(|revs| revs.iter().find(|r| r["revision"].as_u64() == Some(revision)))
            .and_then(|r| r["cause"].as_str())
            .unwrap_or("cause unknown")
            .to_string()
    }
}

/// A trip as `/status` shows it.
#[derive(Debug, Clone, PartialEq)]
struct TripSeen {
    reason: String,
    detail: String,
    revision: u64,
    effective: String,
}

fn trip_of(status: &Value, pool: &str) -> Option<TripSeen> {
    let tripped = pool_status(status, pool)?.get("tripped").filter(|t| !t.is_null())?;
    Some(TripSeen {
        reason: tripped["reason"].as_str().unwrap_or("?").to_string(),
        detail: tripped["detail"].as_str().unwrap_or("").to_string(),
        revision: tripped["revision"].as_u64().unwrap_or(0),
        effective: effective_split(status),
    })
}

fn pool_status<'a>(status: &'a Value, pool: &str) -> Option<&'a Value> {
    status["pools"].as_array()?.iter().find(|p| p["name"].as_str() == Some(pool))
}

fn revision(status: &Value) -> Option<u64> {
    status["revision"].as_u64()
}

fn route_status(status: &Value) -> Option<&Value> {
    status["routes"].as_array()?.iter().find(|r| r["name"].as_str() == Some(ROUTE))
}

fn effective_weight(status: &Value, pool: &str) -> Option<u64> {
    route_status(status)?["effective"][pool].as_u64()
}

/// `blue 100, green 0, canary 0`.
fn effective_split(status: &Value) -> String {
    POOLS
        .iter()
        .map(|pool| format!("{pool} {}", effective_weight(status, pool).map_or("?".to_string(), |w| w.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per revision of `/history`, at most `limit`.
fn history_lines(history: &Value, limit: usize) -> String {
    let mut out = String::new();
    for rev in history.as_array().map(Vec::as_slice).unwrap_or_default().iter().take(limit) {
        let splits = &rev["splits"][ROUTE];
        let split: Vec<String> = POOLS.iter().map(|p| format!("{p} {}", splits[p].as_u64().unwrap_or(0))).collect();
        let _ = writeln!(
            out,
            "     revision {:>3}  {}  {:<28}  {}",
            rev["revision"].as_u64().unwrap_or(0),
            rev["time"].as_str().unwrap_or(""),
            split.join(", "),
            rev["cause"].as_str().unwrap_or("")
        );
    }
    out.trim_end().to_string()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

// ----- the config ----------------------------------------------------------------

/// The demo upstreams' addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backends {
    blue: SocketAddr,
    green: SocketAddr,
    canary: SocketAddr,
}

/// The demo's config file: the same format as `config/cutover.toml`.
fn config_text(backends: &Backends, split: &Split) -> String {
    format!(
        r#"# Written by `cutover demo`: a real config, in the format of config/cutover.toml.
# Port 0 lets the OS pick free ports; the demo prints the ones it got.

[server]
listen = ["127.0.0.1:0"]
request_timeout = "5s"
connect_timeout = "1s"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[pools.blue]                  # the version in production
backends = ["{blue}"]

[pools.green]                 # the next version, deployed beside it
backends = ["{green}"]

[pools.canary]                # a build under test
backends = ["{canary}"]
[pools.canary.guard]          # automatic rollback
max_error_rate = {MAX_ERROR_RATE}
window = "10s"
min_requests = 50

[[routes]]
name = "{ROUTE}"
path_prefix = "/"
split = {{ blue = {b}, green = {g}, canary = {c} }}
"#,
        blue = backends.blue,
        green = backends.green,
        canary = backends.canary,
        b = split.blue,
        g = split.green,
        c = split.canary,
    )
}

/// Replace `path` by writing a sibling and renaming it over, so the watcher
/// never reads a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<(), DemoError> {
    let tmp = path.with_extension("toml.tmp");
    let wrap = |source| DemoError::WriteConfig { path: path.to_path_buf(), source };
    std::fs::write(&tmp, text).map_err(wrap)?;
    std::fs::rename(&tmp, path).map_err(wrap)
}

/// The demo's own temp directory, removed on drop if not before.
#[derive(Debug)]
struct DemoDir {
    path: PathBuf,
    removed: bool,
}

impl DemoDir {
    fn create() -> Result<DemoDir, DemoError> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("cutover-demo-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| DemoError::TempDir { path: path.clone(), source })?;
        Ok(DemoDir { path, removed: false })
    }

    /// Remove the directory; says what happened, for the summary.
    fn remove(mut self) -> String {
        self.removed = true;
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => format!("{} removed", self.path.display()),
            Err(e) => format!("could not remove {}: {e}", self.path.display()),
        }
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ----- the upstreams -------------------------------------------------------------

/// The canary's switch: once on, it fails a fixed share of requests.
#[derive(Debug, Default)]
struct Failing {
    on: AtomicBool,
    seen: AtomicU64,
}

impl Failing {
    fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// Whether this request fails: 3 of every 10 while on, evenly spread.
    fn this_one(&self) -> bool {
        if !self.on.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        // Spread out rather than in a burst: requests 0, 4 and 7 of every 10.
        (n * FAIL_EVERY.0) % FAIL_EVERY.1 < FAIL_EVERY.0
    }
}

/// The three demo upstreams, each a task serving one loopback listener.
struct Upstreams {
    blue: DemoUpstream,
    green: DemoUpstream,
    canary: DemoUpstream,
    canary_failing: Arc<Failing>,
}

struct DemoUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstreams {
    async fn start() -> Result<Upstreams, DemoError> {
        let canary_failing = Arc::new(Failing::default());
        Ok(Upstreams {
            blue: DemoUpstream::start("blue", None).await?,
            green: DemoUpstream::start("green", None).await?,
            canary: DemoUpstream::start("canary", Some(canary_failing.clone())).await?,
            canary_failing,
        })
    }

    fn addrs(&self) -> Backends {
        Backends { blue: self.blue.addr, green: self.green.addr, canary: self.canary.addr }
    }

    async fn stop(self) {
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
    async fn start(name: &'static str, failing: Option<Arc<Failing>>) -> Result<DemoUpstream, DemoError> {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(any).await.map_err(|source| DemoError::Bind { addr: any, source })?;
        let addr = listener.local_addr().map_err(|source| DemoError::Bind { addr: any, source })?;
        let task = tokio::spawn(serve_upstream(listener, name, failing));
        Ok(DemoUpstream { addr, task })
    }
}

/// Serve until aborted; the connections live in a `JoinSet` owned by this
/// task, so aborting it closes them too.
async fn serve_upstream(listener: TcpListener, name: &'static str, failing: Option<Arc<Failing>>) {
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

fn upstream_answer(name: &str, fail: bool) -> Response<Full<Bytes>> {
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

// ----- the load loop -------------------------------------------------------------

/// Measurements of one pool (or of answers no pool gave).
#[derive(Debug, Default, Clone)]
struct Bucket {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

impl Bucket {
    fn p99(&self) -> Option<Duration> {
        p99_us(&mut self.latencies_us.clone()).map(Duration::from_micros)
    }
}

/// The 99th percentile (nearest rank) of `values`, sorting them.
fn p99_us(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * 99).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

/// Index of "answered by no demo pool" (the proxy's own answers, transport errors).
const OTHER: usize = POOLS.len();

/// What the load loop measured: since the monitor last looked, and in all.
#[derive(Debug, Default)]
struct Tally {
    interval: [Bucket; POOLS.len() + 1],
    total: [(u64, u64); POOLS.len() + 1],
}

impl Tally {
    fn record(&mut self, pool: usize, error: bool, latency: Duration) {
        let bucket = &mut self.interval[pool];
        bucket.requests += 1;
        bucket.errors += u64::from(error);
        bucket.latencies_us.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.total[pool].0 += 1;
        self.total[pool].1 += u64::from(error);
    }

    fn take_interval(&mut self) -> [Bucket; POOLS.len() + 1] {
        std::mem::take(&mut self.interval)
    }
}

/// Which pool answered, from the body the demo upstreams write.
fn pool_of(body: &[u8]) -> usize {
    let word: Vec<u8> = body.iter().copied().take_while(u8::is_ascii_alphabetic).collect();
    POOLS.iter().position(|p| p.as_bytes() == word.as_slice()).unwrap_or(OTHER)
}

/// A fixed-rate load on the proxy.
struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl Load {
    fn start(proxy: SocketAddr) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, stopped) = watch::channel(false);
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut workers = JoinSet::new();
        let every = Duration::from_secs(1) * WORKERS / RATE;
        for worker in 0..WORKERS {
            let (client, tally, mut stopped) = (client.clone(), tally.clone(), stopped.clone());
            let uri = format!("http://{proxy}/shop/item/{worker}");
            workers.spawn(async move {
                // Stagger the workers across one period.
                let first = Instant::now() + every * worker / WORKERS;
                let mut tick = tokio::time::interval_at(first, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    let (pool, error, latency) = one_request(&client, &uri).await;
                    lock(&tally).record(pool, error, latency);
                }
            });
        }
        Load { tally, stop, workers }
    }

    /// Stop the workers (and with them the client and its connections);
    /// return the totals.
    async fn stop(mut self) -> [(u64, u64); POOLS.len() + 1] {
        let _ = self.stop.send(true);
        let drained = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), drained).await.is_err() {
            self.workers.abort_all();
            while self.workers.join_next().await.is_some() {}
        }
        let totals = lock(&self.tally).total;
        totals
    }
}

/// One GET through the proxy: (pool index, failed, latency).
async fn one_request(client: &Client<HttpConnector, Empty<Bytes>>, uri: &str) -> (usize, bool, Duration) {
    let started = Instant::now();
    let Ok(request) = Request::get(uri).body(Empty::new()) else { return (OTHER, true, started.elapsed()) };
    let exchange = async {
        let response = client.request(request).await.map_err(|_| ())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|_| ())?.to_bytes();
        Ok::<_, ()>((status, body))
    };
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(Ok((status, body))) => (pool_of(&body), status.is_server_error(), started.elapsed()),
        _ => (OTHER, true, started.elapsed()),
    }
}

// ----- the admin client ----------------------------------------------------------

/// The admin API over real HTTP, as an operator's curl would use it.
#[derive(Clone)]
struct Admin {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Admin {
    fn new(addr: SocketAddr) -> Admin {
        Admin { base: format!("http://{addr}"), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// GET `path` and parse the JSON; errors say which call failed.
    async fn get(&self, path: &str) -> Result<Value, String> {
        let (code, body) = self.send(Method::GET, path, None).await?;
        if code != StatusCode::OK {
            return Err(format!("GET {path} answered {code}: {body}"));
        }
        Ok(body)
    }

    /// Call `method path` with an optional JSON body; the answer's status
    /// and JSON body.
    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> Result<(StatusCode, Value), String> {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let code = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            let value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON ({e})"))?;
            Ok::<_, String>((code, value))
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(format!("admin API {method} {path}: {e}")),
            Err(_) => Err(format!("admin API {method} {path}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

// ----- the display ---------------------------------------------------------------

/// The demo's addresses.
#[derive(Debug, Clone)]
struct Urls {
    proxy: SocketAddr,
    admin: SocketAddr,
}

fn print_banner(urls: &Urls, config_path: &Path, backends: &Backends, duration: Duration) {
    let mut out = String::new();
    let _ = writeln!(out, "cutover demo: the real proxy, three demo upstreams and a load loop, all on 127.0.0.1.");
    let _ = writeln!(
        out,
        "It runs for {}s (--duration) or until Ctrl-C, and leaves nothing running.\n",
        duration.as_secs()
    );
    let _ = writeln!(out, "  proxy     http://{}/", urls.proxy);
    let _ = writeln!(out, "  status    http://{}/status", urls.admin);
    let _ = writeln!(out, "  metrics   http://{}/metrics", urls.admin);
    let _ = writeln!(out, "  history   http://{}/history", urls.admin);
    let _ = writeln!(out, "  config    {} (watched: edit it and the proxy reloads)", config_path.display());
    let _ = writeln!(
        out,
        "  upstreams blue {}, green {}, canary {} (each answers with its name)\n",
        backends.blue, backends.green, backends.canary
    );
    out.push_str(&curl_lines(urls, "Try by hand while it runs:"));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn curl_lines(urls: &Urls, title: &str) -> String {
    let (proxy, admin) = (urls.proxy, urls.admin);
    format!(
        "{title}\n  \
         curl -s http://{proxy}/                                  # blue, green or canary\n  \
         curl -s http://{admin}/status\n  \
         curl -s http://{admin}/metrics | grep cutover_pool\n  \
         curl -s -X PUT http://{admin}/routes/{ROUTE}/split -d '{{\"blue\":0,\"green\":100}}'\n  \
         curl -s -X POST http://{admin}/routes/{ROUTE}/switchback\n  \
         curl -s -X POST http://{admin}/pools/canary/reset\n\n"
    )
}

/// Every `period`, read what the load loop measured and what `/status`
/// says, and show it.
async fn monitor(
    tally: Arc<Mutex<Tally>>,
    admin: Admin,
    screen: Arc<Mutex<Screen>>,
    started: Instant,
    duration: Duration,
    period: Duration,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut status = Value::Null;
    loop {
        tick.tick().await;
        let interval = lock(&tally).take_interval();
        let seconds = last.elapsed().as_secs_f64().max(0.001);
        last = Instant::now();
        if let Ok(fresh) = admin.get("/status").await {
            status = fresh;
        }
        let rows = rows(&interval, &status, seconds);
        let elapsed = started.elapsed();
        let mut screen = lock(&screen);
        let lines = if screen.live {
            table(&rows, &screen, revision(&status), elapsed, duration)
        } else {
            vec![plain_line(&rows, revision(&status), elapsed)]
        };
        screen.table(lines);
    }
}

/// One pool's line of the display.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: &'static str,
    /// Effective weight as a share of the route's total, from `/status`.
    weight: Option<f64>,
    /// Share of the interval's responses.
    share: f64,
    rate: f64,
    error_rate: Option<f64>,
    p99: Option<Duration>,
    /// The proxy's guard window: requests and failure share.
    guard: Option<(u64, f64)>,
    tripped: bool,
}

fn rows(interval: &[Bucket; POOLS.len() + 1], status: &Value, seconds: f64) -> Vec<Row> {
    let total: u64 = interval.iter().map(|b| b.requests).sum();
    let weights: Vec<Option<u64>> = POOLS.iter().map(|p| effective_weight(status, p)).collect();
    let weight_sum: u64 = weights.iter().flatten().sum();
    let names = POOLS.iter().copied().chain(std::iter::once("other"));
    names
        .zip(interval.iter())
        .enumerate()
        .filter(|(i, (_, bucket))| *i < OTHER || bucket.requests > 0)
        .map(|(i, (name, bucket))| {
            let pool = pool_status(status, name);
            let guard = pool.and_then(|p| {
                let g = p.get("guard").filter(|g| !g.is_null())?;
                Some((g["requests"].as_u64().unwrap_or(0), g["error_rate"].as_f64().unwrap_or(0.0)))
            });
            Row {
                name,
                weight: weights
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|_| weight_sum > 0)
                    .map(|w| w as f64 / weight_sum as f64),
                share: if total == 0 { 0.0 } else { bucket.requests as f64 / total as f64 },
                rate: bucket.requests as f64 / seconds,
                error_rate: (bucket.requests > 0).then(|| bucket.errors as f64 / bucket.requests as f64),
                p99: bucket.p99(),
                guard,
                tripped: pool.is_some_and(|p| p.get("tripped").is_some_and(|t| !t.is_null())),
            }
        })
        .collect()
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
}

/// The in-place table (each line well under 80 columns, so none wraps and
/// the redraw's cursor arithmetic holds).
fn table(rows: &[Row], screen: &Screen, revision: Option<u64>, elapsed: Duration, duration: Duration) -> Vec<String> {
    let mut lines = vec![
        String::new(),
        screen.bold(&format!(
            "  {:.1}s of {}s | revision {} | phase {}",
            elapsed.as_secs_f64(),
            duration.as_secs(),
            revision.map_or("?".into(), |r| r.to_string()),
            screen.phase
        )),
        format!(
            "  {:<7} {:>7} {:>7} {:>6} {:>7} {:>8}  {}",
            "pool", "weight", "share", "req/s", "errors", "p99", "guard (10s window)"
        ),
    ];
    for row in rows {
        let guard = match row.guard {
            Some((n, rate)) => format!("n={n} failed {}", pct(rate)),
            None => String::new(),
        };
        let mut line = format!(
            "  {:<7} {:>7} {:>7} {:>6.0} {:>7} {:>8}  {guard}",
            row.name,
            row.weight.map_or("-".into(), pct),
            pct(row.share),
            row.rate,
            row.error_rate.map_or("-".into(), pct),
            ms(row.p99),
        );
        if row.tripped {
            line = format!("{}  {}", line.trim_end(), screen.alert("TRIPPED"));
        }
        lines.push(line);
    }
    lines
}

/// One line per snapshot, for logs and pipes.
fn plain_line(rows: &[Row], revision: Option<u64>, elapsed: Duration) -> String {
    let mut line = format!("[{:>5.1}s] rev {}", elapsed.as_secs_f64(), revision.map_or("?".into(), |r| r.to_string()));
    for row in rows {
        let _ = write!(line, " | {} {}", row.name, pct(row.share));
        if let Some(w) = row.weight {
            let _ = write!(line, " (w {})", pct(w));
        }
        if row.rate > 0.0 {
            let _ =
                write!(line, " {:.0}/s err {} p99 {}", row.rate, row.error_rate.map_or("-".into(), pct), ms(row.p99));
        }
        if let Some((n, rate)) = row.guard {
            let _ = write!(line, " guard n={n} {}", pct(rate));
        }
        if row.tripped {
            line.push_str(" TRIPPED");
        }
    }
    line
}

/// The terminal: event lines scroll up; the live table stays at the bottom
/// and is redrawn in place (or, without a terminal, printed as lines).
#[derive(Debug)]
struct Screen {
    live: bool,
    color: bool,
    /// The phase being shown.
    phase: String,
    /// The table last drawn, and how many lines it took.
    table: Vec<String>,
    drawn: usize,
}

impl Screen {
    fn new(live: bool, color: bool) -> Screen {
        Screen { live, color, phase: "starting".into(), table: Vec::new(), drawn: 0 }
    }

    fn erase_table(&mut self, out: &mut impl std::io::Write) {
        if self.live && self.drawn > 0 {
            // Up to the table's first line, then clear to the end of the screen.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        self.drawn = 0;
    }

    fn draw_table(&mut self, out: &mut impl std::io::Write) {
        if self.live {
            for line in &self.table {
                let _ = writeln!(out, "{line}");
            }
            self.drawn = self.table.len();
        }
    }

    /// Print `text` above the table.
    fn event(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        self.erase_table(&mut out);
        let _ = writeln!(out, "{text}");
        self.draw_table(&mut out);
        let _ = out.flush();
    }

    /// Show a new table.
    fn table(&mut self, lines: Vec<String>) {
        let mut out = std::io::stdout().lock();
        if self.live {
            self.erase_table(&mut out);
            self.table = lines;
            self.draw_table(&mut out);
        } else {
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }

    /// Leave the last table where it is: what follows prints below it.
    fn freeze(&mut self) {
        self.drawn = 0;
        self.table.clear();
    }

    fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn alert(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1;31m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

// ----- the end -------------------------------------------------------------------

fn summary(
    totals: &[(u64, u64); POOLS.len() + 1],
    elapsed: Duration,
    history: Option<&Value>,
    status: Option<&Value>,
    proxy_result: &str,
    removed: &str,
) -> String {
    let mut out = String::new();
    let all: u64 = totals.iter().map(|(n, _)| n).sum();
    let failed: u64 = totals.iter().map(|(_, e)| e).sum();
    let _ = writeln!(out, "\nSummary: {all} requests in {:.1}s, {failed} failed.", elapsed.as_secs_f64());
    let names = POOLS.iter().copied().chain(std::iter::once("other"));
    for (name, (n, e)) in names.zip(totals.iter()) {
        if *n > 0 || name != "other" {
            let _ = writeln!(out, "  {name:<7} {n:>7} answered, {e:>5} failed");
        }
    }
    if let Some(trip) = status.and_then(|s| trip_of(s, "canary")) {
        let _ = writeln!(
            out,
            "  canary tripped by the guard ({}): {} (revision {})",
            trip.reason, trip.detail, trip.revision
        );
    }
    if let Some(history) = history {
        let _ = writeln!(out, "  revisions (GET /history), newest first:");
        let _ = writeln!(out, "{}", history_lines(history, 8));
    }
    let _ = writeln!(out, "  {proxy_result}; the load loop and the demo upstreams are stopped; {removed}.\n");
    out
}

// ----- plumbing ------------------------------------------------------------------

/// Lock, recovering from a panic elsewhere (the display must not die with it).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ctrl-C (SIGINT) and SIGTERM, installed before anything starts so the
/// demo always gets to clean up.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Backends {
        Backends {
            blue: "127.0.0.1:9001".parse().unwrap(),
            green: "127.0.0.1:9002".parse().unwrap(),
            canary: "127.0.0.1:9003".parse().unwrap(),
        }
    }

    #[test]
    fn demo_configs_validate_like_any_config() {
        for split in [Split::BLUE_ONLY, Split::CANARY_20] {
            let text = config_text(&backends(), &split);
            let config = crate::config::parse(Path::new("demo.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let route = &config.routes[0];
            assert_eq!(route.name, ROUTE);
            let weights: Vec<(String, u32)> =
                vec![("blue".into(), split.blue), ("green".into(), split.green), ("canary".into(), split.canary)];
            assert_eq!(route.split, weights);
            let guard = config.pool("canary").and_then(|p| p.guard.as_ref()).expect("canary guard");
            assert_eq!(guard.max_error_rate, MAX_ERROR_RATE);
        }
    }

    #[test]
    fn the_canary_fails_three_in_ten_once_started() {
        let failing = Failing::default();
        assert!((0..100).all(|_| !failing.this_one()));
        failing.start();
        let failed = (0..1000).filter(|_| failing.this_one()).count();
        assert_eq!(failed, 300);
    }

    #[test]
    fn answers_are_attributed_to_the_pool_that_gave_them() {
        assert_eq!(pool_of(b"blue\n"), 0);
        assert_eq!(pool_of(b"green\n"), 1);
        assert_eq!(pool_of(b"canary: simulated failure\n"), 2);
        assert_eq!(pool_of(b"bad gateway\n"), OTHER);
        assert_eq!(pool_of(b""), OTHER);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        assert_eq!(p99_us(&mut []), None);
        assert_eq!(p99_us(&mut [5]), Some(5));
        let mut values: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(p99_us(&mut values), Some(198));
        let mut values: Vec<u64> = (1..=100).collect();
        assert_eq!(p99_us(&mut values), Some(99));
    }

    #[test]
    fn a_short_demo_still_has_room_for_every_phase() {
        for secs in [10, 15, 60, 600] {
            let d = Duration::from_secs(secs);
            let plan = Plan::for_duration(d);
            let before_trip = plan.blue_only + plan.reload_deadline + plan.canary_healthy;
            assert!(before_trip + Duration::from_secs(2) < plan.trip_deadline, "{secs}s: {plan:?}");
            let after = plan.trip_deadline + plan.after_trip + plan.on_green;
            assert!(after <= d, "{secs}s: {plan:?}");
        }
    }

    #[test]
    fn rows_combine_the_load_loop_and_status() {
        let mut tally = Tally::default();
        for i in 0..80 {
            tally.record(0, false, Duration::from_millis(1 + i % 3));
        }
        for i in 0..20 {
            tally.record(2, i % 3 == 0, Duration::from_millis(2));
        }
        let status = serde_json::json!({
            "revision": 3,
            "routes": [{"name": "shop", "effective": {"blue": 100, "green": 0, "canary": 0}}],
            "pools": [
                {"name": "blue", "tripped": null, "guard": null},
                {"name": "canary", "tripped": {"reason": "error_rate", "detail": "error rate 0.31 > 0.05 over 10s, n=60", "revision": 3},
                 "guard": {"requests": 60, "failures": 19, "error_rate": 0.31, "p99_ms": 2.5}}
            ]
        });
        let rows = rows(&tally.take_interval(), &status, 1.0);
        assert_eq!(rows.len(), 3, "no 'other' row when nothing went there");
        assert_eq!(rows[0].share, 0.8);
        assert_eq!(rows[0].weight, Some(1.0));
        assert_eq!(rows[2].error_rate, Some(7.0 / 20.0));
        assert_eq!(rows[2].guard, Some((60, 0.31)));
        assert!(rows[2].tripped && !rows[0].tripped);
        let line = plain_line(&rows, Some(3), Duration::from_secs(5));
        assert!(line.contains("canary 20.0%") && line.contains("TRIPPED"), "{line}");
        assert_eq!(trip_of(&status, "canary").map(|t| t.reason), Some("error_rate".to_string()));
        assert_eq!(effective_split(&status), "blue 100, green 0, canary 0");
        let screen = Screen::new(true, false);
        for line in table(&rows, &screen, Some(3), Duration::from_secs(5), Duration::from_secs(60)) {
            assert!(line.chars().count() < 80, "{line}");
        }
    }
}
