//! `cutover demo`: a self-contained showcase of the product, run for real.
//!
//! This module owns the demo and nothing else. It starts three demo upstreams
//! on loopback (blue, green and canary, each a small hyper server answering
//! with its own name), writes a real config file into a fresh temp directory,
//! and runs the real proxy on it with [`cutover::bind`] and [`cutover::run`] — the
//! same code paths, the same config format and the same file watcher as
//! `cutover run`. A bounded load loop (a few keep-alive clients, ~200
//! requests a second, all to 127.0.0.1) sends traffic through the proxy, and
//! a monitor shows, live, the share of responses each pool served, its error
//! rate and p99 (measured by the load loop itself) next to the weights and
//! guard figures the proxy reports on `GET /status`.
//!
//! The story is told in phases, each announced: all traffic on blue; the
//! demo rewrites the config file to roll green out over blue in steps of
//! 10, 50 and 100% (a hot reload through the file watcher), and the proxy
//! takes each step on a healthy verdict of green's guard until it promotes
//! green; the next release, the canary, is rolled out over green and starts
//! failing 30% of its requests, and the proxy's judge, comparing it with
//! green over the same time, finds it failing and aborts the rollout — the
//! canary back to weight 0, the reason read from `/rollouts`; then an
//! operator moves the route by the admin API and switches back over HTTP,
//! exactly as `curl` would. Each step, promotion and abort is printed as it
//! happens. Phase lengths are shares of `--duration`, and where a phase
//! waits for the proxy (a reload, a step, a promotion, an abort) it polls
//! for the condition with a deadline rather than sleeping, so a short run
//! still shows everything and ends on time.
//!
//! Only the canary's failures are staged; the proxy's part is not simulated.
//! No process is spawned: everything runs as tasks on the caller's tokio
//! runtime and is stopped before [`run`] returns — the load first, then the
//! proxy through `run`'s shutdown future, then the upstreams — and the temp
//! directory is removed, also on Ctrl-C or an error.
//!
//! One file per idea: [`story`] (the phases), [`upstreams`], [`load`] (the
//! load loop and its tally), [`admin`] (the admin client and what it reads
//! from `/status`), [`config`] (the demo's config file and temp directory),
//! [`display`] (the live table and the summary), [`params`], [`error`] and
//! [`plumbing`]. It is the binary's, not the library's: it uses only the
//! library's public API, as any embedder would.

use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use admin::Admin;
use config::{config_text, write_atomically, DemoDir, Stage};
use display::{curl_lines, monitor, print_banner, summary, Screen, Urls};
use error::DemoError;
use load::Load;
use plumbing::{lock, Signals};
use story::{Plan, Story};
use upstreams::Upstreams;

mod admin;
mod config;
mod display;
mod error;
mod load;
mod params;
mod plumbing;
mod story;
mod upstreams;

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
    let plan = Plan::for_duration(duration);
    write_atomically(&config_path, &config_text(&backends, Stage::BlueOnly, plan.hold()))?;
    let (config, text) = cutover::config::load_with_text(&config_path).map_err(DemoError::Config)?;
    let listeners = cutover::bind(&config).await.map_err(|(addr, source)| DemoError::Bind { addr, source })?;
    let proxy_addr = match listeners.traffic_addrs().first() {
        Some(addr) => *addr,
        None => return Err(DemoError::Story("the proxy has no traffic listener".into())),
    };
    let admin_addr = listeners.admin_addr().map_err(|source| DemoError::Bind { addr: config.admin.listen, source })?;

    let (stop_proxy, proxy_stopped) = oneshot::channel::<()>();
    let run_options = cutover::RunOptions {
        seed: options.seed,
        source: Some((config_path.clone(), text)),
        watch: true,
        ..Default::default()
    };
    let mut proxy = tokio::spawn(cutover::run(config, listeners, run_options, async move {
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
        plan,
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
