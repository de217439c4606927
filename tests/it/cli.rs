//! The command line (SPEC §1), through the real binary: `check` on good and
//! bad files, exit codes, and `run` serving a request, logging as asked and
//! exiting 0 on SIGTERM.
//!
//! The binary listens on `127.0.0.1:0` and the tests read the ports it got
//! from its "serving" log lines (a port found free and released before the
//! binary binds it can be taken by a parallel test meanwhile); waits are on
//! conditions (a log line, a process exit) with generous deadlines. The upstream, the client and the
//! config are the shared harness's (`support`).

use crate::support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;

use support::process::{cutover, Running};
use support::{exchange, Config, RawUpstream, Reply};

/// Run `cutover args…` to completion.
fn run_cutover(args: &[&str]) -> Output {
    cutover().args(args).output().expect("start cutover")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Pool names and route names of a config file, read with the `toml` crate
/// (not with cutover's own loader).
fn names_in(path: &Path) -> (Vec<String>, Vec<String>) {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pools = table["pools"].as_table().unwrap().keys().cloned().collect();
    let routes = table["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    (pools, routes)
}

fn assert_check_passes(path: &Path) {
    let out = run_cutover(&["check", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}: {}{}", path.display(), stdout, text(&out.stderr));
    let (pools, routes) = names_in(path);
    assert!(!pools.is_empty() && !routes.is_empty(), "{}", path.display());
    for name in pools.iter().chain(&routes) {
        assert!(stdout.contains(name.as_str()), "{}: summary does not name {name:?}:\n{stdout}", path.display());
    }
}

#[test]
fn check_accepts_the_default_config_and_summarises_it() {
    let path = config_dir().join("cutover.toml");
    assert_check_passes(&path);
    let stdout = text(&run_cutover(&["check", path.to_str().unwrap()]).stdout);
    for expected in ["blue", "canary", "app"] {
        assert!(stdout.contains(expected), "{expected} missing from:\n{stdout}");
    }
}

#[test]
fn check_prints_each_routes_rollout_plan() {
    let path = config_dir().join("rollout.toml");
    let out = run_cutover(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "rollout of canary: 5% for 5m, 25% for 5m, pause for an operator, 50% for 5m, 100% for 10m",
        "each step needs a healthy verdict against baseline stable: error increase <= 0.01",
        "latency <= 1.5 x its p99",
        "inconclusive for 30m pauses; failing aborts",
        "starts by itself on a new version; bake 15m",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
    // A route without a rollout has no plan under it.
    let plain = text(&run_cutover(&["check", config_dir().join("cutover.toml").to_str().unwrap()]).stdout);
    assert!(!plain.contains("rollout of"), "{plain}");
}

#[test]
fn check_accepts_every_example_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            assert_check_passes(&path);
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example configs found");
}

/// Write `body` to a temp file, `cutover check` it, and expect exit 1 with
/// `<path>:<line>:<col>: ` on stderr; returns the stderr.
fn assert_check_fails_at(body: &str, line: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, body).unwrap();
    let out = run_cutover(&["check", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    let prefix = format!("{}:{line}:", path.display());
    let at = stderr.find(&prefix).unwrap_or_else(|| panic!("no {prefix:?} in: {stderr}"));
    let rest = &stderr[at + prefix.len()..];
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!col.is_empty() && col.parse::<usize>().unwrap() >= 1, "no column after {prefix:?}: {stderr}");
    assert!(rest[col.len()..].starts_with(": "), "no ': ' after {prefix}{col}: {stderr}");
    stderr
}

#[test]
fn check_reports_unknown_pool_with_its_line() {
    let stderr = assert_check_fails_at(
        "[pools.blue]\n\
         backends = [\"127.0.0.1:9001\"]\n\
         \n\
         [[routes]]\n\
         name = \"app\"\n\
         path_prefix = \"/\"\n\
         split = { blue = 90, purple = 10 }\n",
        7,
    );
    assert!(stderr.contains("purple"), "{stderr}");
}

#[test]
fn check_reports_unknown_key_with_its_line() {
    let stderr = assert_check_fails_at(
        "[pools.blue]\n\
         backends = [\"127.0.0.1:9001\"]\n\
         backend_timeout = \"1s\"\n\
         [[routes]]\n\
         name = \"app\"\n\
         split = { blue = 1 }\n",
        3,
    );
    assert!(stderr.contains("backend_timeout"), "{stderr}");
}

#[test]
fn check_reports_unparsable_duration_with_its_line() {
    let stderr = assert_check_fails_at(
        "[server]\n\
         listen = [\"127.0.0.1:8080\"]\n\
         request_timeout = \"30 parsecs\"\n\
         [pools.blue]\n\
         backends = [\"127.0.0.1:9001\"]\n\
         [[routes]]\n\
         name = \"app\"\n\
         split = { blue = 1 }\n",
        3,
    );
    assert!(stderr.contains("30 parsecs"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["frobnicate"][..], &["--bogus"], &["check", "--bogus", "x.toml"], &["check"], &["run", "--config"]] {
        let out = run_cutover(args);
        assert_eq!(out.status.code(), Some(2), "cutover {args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn run_with_missing_config_exits_1_naming_the_path() {
    let out = run_cutover(&["run", "--config", "/nonexistent.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// A valid config file in a temp dir: traffic on `listen`, admin on `admin`,
/// one pool holding `backend`.
fn write_config(dir: &Path, listen: u16, admin: u16, backend: SocketAddr) -> PathBuf {
    let path = dir.join("cutover.toml");
    let listeners = format!(
        "[server]\nlisten = [\"127.0.0.1:{listen}\"]\ndrain_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\""
    );
    std::fs::write(&path, Config::one_pool(&[backend]).raw(&listeners).build()).unwrap();
    path
}

#[test]
fn run_with_taken_port_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), port, 0, "127.0.0.1:9".parse().unwrap());
    let mut running = Running::start(&config, &[]);
    let status = running.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", running.lines.join("\n"));
    let stderr = running.lines.join("\n");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    drop(taken);
}

/// Start `cutover run` on a fresh config, serve one request through it,
/// SIGTERM it and expect exit 0; returns its stderr lines.
fn serve_one_request_and_terminate(extra: &[&str]) -> Vec<String> {
    // The upstream and the client run on this runtime's threads, while
    // this one waits on the process.
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nupstream-ok";
    let upstream = runtime.block_on(RawUpstream::always(Reply::close(&answer[..])));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 0, 0, upstream.addr);
    let mut running = Running::start(&config, extra);
    let port = running.wait_for_port("serving traffic");
    running.wait_for_log("serving admin");

    let request = b"GET /hello HTTP/1.1\r\nHost: cli.test\r\nConnection: close\r\n\r\n";
    let out = runtime.block_on(exchange(SocketAddr::from(([127, 0, 0, 1], port)), request));
    assert_eq!((out.only().status, out.only().body.as_slice()), (200, &b"upstream-ok"[..]), "{}", out.raw);
    assert_eq!(upstream.requests().len(), 1, "{:#?}", upstream.requests());

    running.sigterm();
    let status = running.wait_exit();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; stderr:\n{}", running.lines.join("\n"));
    std::mem::take(&mut running.lines)
}

#[test]
fn run_serves_traffic_and_exits_0_on_sigterm() {
    let lines = serve_one_request_and_terminate(&[]);
    assert!(lines.iter().any(|l| l.contains("shutting down")), "{}", lines.join("\n"));
}

/// Start `cutover run` (with `RUST_LOG=debug`), wait until it says it is
/// serving, and at once send it `kill {signal}`; then `settle` decides how
/// the round ended. `rounds` times.
fn signal_right_after_startup<T>(signal: &str, rounds: usize, mut settle: impl FnMut(&mut Running) -> T) -> Vec<T> {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..rounds {
        let config = write_config(dir.path(), 0, 0, "127.0.0.1:9".parse().unwrap());
        let mut running = Running::start_with_log(&config, &[], "info,cutover=debug");
        running.wait_for_log("serving admin");
        running.signal(signal);
        outcomes.push(settle(&mut running));
    }
    outcomes
}

/// A SIGTERM that arrives as soon as the proxy says it is serving is a
/// clean shutdown too, not death by the default signal action.
#[test]
fn sigterm_right_after_startup_still_exits_0() {
    let codes = signal_right_after_startup("-TERM", 20, |running| running.wait_exit().code());
    assert!(codes.iter().all(|c| *c == Some(0)), "exit codes (None = killed by the signal): {codes:?}");
}

/// A SIGHUP (reload) as soon as the proxy says it is serving must not kill
/// it — SIGHUP's default action is to terminate — but reload the config.
#[test]
fn sighup_right_after_startup_does_not_kill_the_proxy() {
    let survived = signal_right_after_startup("-HUP", 20, |running| {
        // Logged (at debug) once the SIGHUP reload found the file unchanged;
        // `false` if the process died first.
        let reloaded = running.try_wait_for_log("config unchanged");
        let _ = running.child.kill();
        reloaded
    });
    assert!(survived.iter().all(|s| *s), "rounds where the proxy survived SIGHUP and reloaded: {survived:?}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let lines = serve_one_request_and_terminate(&["--log-format", "json"]);
    let lines: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(line.starts_with('{'), "not JSON: {line}");
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}
