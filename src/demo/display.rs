//! What the demo shows: the banner, a live table (redrawn in place on a
//! terminal, a line per second otherwise) combining the load loop's figures
//! with the proxy's `/status`, the story's events, and the summary at the
//! end.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::admin::{effective_weight, history_lines, pool_status, revision, trip_of, Admin};
use super::config::Backends;
use super::load::{Bucket, Tally, OTHER};
use super::params::{POOLS, ROUTE};
use super::plumbing::lock;

/// The demo's addresses.
#[derive(Debug, Clone)]
pub(super) struct Urls {
    pub(super) proxy: SocketAddr,
    pub(super) admin: SocketAddr,
}

pub(super) fn print_banner(urls: &Urls, config_path: &Path, backends: &Backends, duration: Duration) {
    let mut out = String::new();
    let _ = writeln!(out, "cutover demo: the real proxy, three demo upstreams and a load loop, all on 127.0.0.1.");
    let _ = writeln!(
        out,
        "It runs for {}s (--duration) or until Ctrl-C, and leaves nothing running.\n",
        duration.as_secs()
    );
    let _ = writeln!(out, "  console   http://{}/ui   (open it in a browser: the release, live)", urls.admin);
    let _ = writeln!(out, "  proxy     http://{}/", urls.proxy);
    let _ = writeln!(out, "  status    http://{}/status", urls.admin);
    let _ = writeln!(out, "  metrics   http://{}/metrics", urls.admin);
    let _ = writeln!(out, "  history   http://{}/history", urls.admin);
    let _ = writeln!(out, "  rollouts  http://{}/rollouts", urls.admin);
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

pub(super) fn curl_lines(urls: &Urls, title: &str) -> String {
    let (proxy, admin) = (urls.proxy, urls.admin);
    format!(
        "{title}\n  \
         curl -s http://{proxy}/                                  # blue, green or canary\n  \
         curl -s http://{admin}/status\n  \
         curl -s http://{admin}/rollouts\n  \
         curl -s http://{admin}/metrics | grep cutover_pool\n  \
         curl -s -X PUT http://{admin}/routes/{ROUTE}/split -H 'Content-Type: application/json' -d '{{\"blue\":0,\"green\":100}}'\n  \
         curl -s -X POST http://{admin}/routes/{ROUTE}/switchback -H 'X-Cutover-Admin: 1'\n  \
         curl -s -X POST http://{admin}/pools/canary/reset -H 'X-Cutover-Admin: 1'\n\n"
    )
}

/// Every `period`, read what the load loop measured and what `/status`
/// says, and show it.
pub(super) async fn monitor(
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
pub(super) struct Row {
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

pub(super) fn rows(interval: &[Bucket; POOLS.len() + 1], status: &Value, seconds: f64) -> Vec<Row> {
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

pub(super) fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

pub(super) fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
}

/// The in-place table (each line well under 80 columns, so none wraps and
/// the redraw's cursor arithmetic holds).
pub(super) fn table(
    rows: &[Row],
    screen: &Screen,
    revision: Option<u64>,
    elapsed: Duration,
    duration: Duration,
) -> Vec<String> {
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
pub(super) fn plain_line(rows: &[Row], revision: Option<u64>, elapsed: Duration) -> String {
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
pub(super) struct Screen {
    live: bool,
    color: bool,
    /// The phase being shown.
    pub(super) phase: String,
    /// The table last drawn, and how many lines it took.
    table: Vec<String>,
    drawn: usize,
}

impl Screen {
    pub(super) fn new(live: bool, color: bool) -> Screen {
        Screen { live, color, phase: "starting".into(), table: Vec::new(), drawn: 0 }
    }

    pub(super) fn erase_table(&mut self, out: &mut impl std::io::Write) {
        if self.live && self.drawn > 0 {
            // Up to the table's first line, then clear to the end of the screen.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        self.drawn = 0;
    }

    pub(super) fn draw_table(&mut self, out: &mut impl std::io::Write) {
        if self.live {
            for line in &self.table {
                let _ = writeln!(out, "{line}");
            }
            self.drawn = self.table.len();
        }
    }

    /// Print `text` above the table.
    pub(super) fn event(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        self.erase_table(&mut out);
        let _ = writeln!(out, "{text}");
        self.draw_table(&mut out);
        let _ = out.flush();
    }

    /// Show a new table.
    pub(super) fn table(&mut self, lines: Vec<String>) {
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
    pub(super) fn freeze(&mut self) {
        self.drawn = 0;
        self.table.clear();
    }

    pub(super) fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(super) fn alert(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1;31m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

pub(super) fn summary(
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
        let _ = writeln!(out, "{}", history_lines(history, 12));
    }
    let _ = writeln!(out, "  {proxy_result}; the load loop and the demo upstreams are stopped; {removed}.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::admin::{effective_split, trip_of};
    use super::super::load::Tally;
    use super::*;

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
