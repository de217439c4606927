//! The admin command line (`cutover::cli`) against a real proxy with real
//! backends: every command, with and without the admin token, tables and
//! `--json`, and the exit codes scripts rely on (0 done, 1 refused, 2 usage,
//! 3 unreachable).
//!
//! The commands run through the library entry point `main.rs` calls,
//! parsed from argument lists by clap exactly as the binary parses them.

use crate::support;

use clap::Parser;
use serde_json::{json, Value};

use cutover::cli::{execute, CliCommand, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE};
use support::{get_json, Config, TestProxy, Upstream};

const TOKEN: &str = "cli-test-token";

#[derive(Debug, Parser)]
struct Top {
    #[command(subcommand)]
    command: CliCommand,
}

/// What one command printed, and its exit code.
struct Ran {
    code: u8,
    out: String,
    err: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.out))
    }
}

async fn cli(args: &[&str]) -> Ran {
    let mut argv = vec!["cutover"];
    argv.extend_from_slice(args);
    let command = Top::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}")).command;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = execute(command, &mut out, &mut err, false).await;
    Ran { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
}

/// A proxy with pools blue, green and canary, routes `shop` (blue/canary)
/// and `api` (blue/green), and — with `token` — a token file in `[admin]`.
async fn proxy(token: bool) -> (TestProxy, Vec<Upstream>, tempfile::TempDir) {
    let ups = vec![Upstream::named("blue").await, Upstream::named("green").await, Upstream::named("canary").await];
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut config = Config::new()
        .pool("blue", &[ups[0].addr])
        .pool("green", &[ups[1].addr])
        .pool_with("canary", &[ups[2].addr], "[pools.canary.guard]\nmax_error_rate = 0.5\nmin_requests = 1000\n")
        .route_with("shop", "blue = 90, canary = 10", "path_prefix = \"/shop\"")
        .route("api", "blue = 100, green = 0");
    if token {
        config = config.raw(&format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", token_file.display()));
    }
    (TestProxy::start(&config.build()).await, ups, secrets)
}

fn route(status: &Value, name: &str) -> Value {
    status["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone()
}

#[tokio::test]
async fn every_command_works_against_a_proxy_without_a_token() {
    let (proxy, _ups, _secrets) = proxy(false).await;
    let admin = proxy.admin_url("");
    let a = admin.as_str();

    let status = cli(&["status", "--admin", a]).await;
    assert_eq!(status.code, EXIT_OK, "{}", status.err);
    let shop = status.out.lines().find(|l| l.starts_with("shop")).unwrap();
    assert!(shop.contains("blue 90 · canary 10"), "{}", status.out);
    assert!(status.out.lines().any(|l| l.starts_with("canary") && l.contains("serving")), "{}", status.out);

    let json = cli(&["status", "--admin", a, "--json"]).await;
    assert_eq!(json.code, EXIT_OK);
    assert_eq!(json.json()["routes"], get_json(&proxy.admin_url("/status")).await["routes"]);

    let set = cli(&["set", "api", "blue=0", "green=100", "--admin", a]).await;
    assert_eq!(set.code, EXIT_OK, "{}", set.err);
    assert!(set.out.starts_with("api: split set to blue 0 · green 100 (revision 2)"), "{}", set.out);
    assert_eq!(
        route(&get_json(&proxy.admin_url("/status")).await, "api")["effective"],
        json!({"blue": 0, "green": 100})
    );

    let back = cli(&["switchback", "api", "--admin", a, "--json"]).await;
    assert_eq!(back.code, EXIT_OK, "{}", back.err);
    assert_eq!(back.json(), json!({"revision": 3}));
    assert_eq!(
        route(&get_json(&proxy.admin_url("/status")).await, "api")["effective"],
        json!({"blue": 100, "green": 0})
    );

    let clear = cli(&["set", "api", "--clear", "--admin", a]).await;
    assert_eq!(clear.code, EXIT_OK, "{}", clear.err);
    assert!(route(&get_json(&proxy.admin_url("/status")).await, "api")["override"].is_null());

    let trip = cli(&["trip", "canary", "--admin", a]).await;
    assert_eq!((trip.code, trip.out.trim()), (EXIT_OK, "canary: tripped (revision 5)"), "{}", trip.err);
    let status = cli(&["status", "--admin", a]).await.out;
    assert!(status.lines().any(|l| l.starts_with("shop") && l.ends_with("canary tripped")), "{status}");
    assert!(status.contains("canary tripped: tripped by an operator"), "{status}");

    let reset = cli(&["reset", "canary", "--admin", a]).await;
    assert_eq!(reset.code, EXIT_OK, "{}", reset.err);
    assert!(get_json(&proxy.admin_url("/status")).await["pools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["tripped"].is_null()));

    let history = cli(&["history", "--admin", a, "-n", "3"]).await;
    assert_eq!(history.code, EXIT_OK);
    let lines: Vec<&str> = history.out.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three revisions:\n{}", history.out);
    assert!(lines[1].starts_with("6 ") && lines[1].contains("reset"), "{}", history.out);
    let history = cli(&["history", "--admin", a, "--json"]).await.json();
    assert_eq!(history.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn refusals_exit_1_with_the_proxy_s_reason() {
    let (proxy, _ups, _secrets) = proxy(false).await;
    let admin = proxy.admin_url("");
    let a = admin.as_str();
    let unknown = cli(&["trip", "nosuch", "--admin", a]).await;
    assert_eq!(unknown.code, EXIT_REFUSED);
    assert!(unknown.err.contains("404") && unknown.err.contains("nosuch"), "{}", unknown.err);
    let bad = cli(&["set", "api", "blue=0", "green=0", "--admin", a]).await;
    assert_eq!(bad.code, EXIT_REFUSED, "all weights zero is refused: {}", bad.err);
    let nothing = cli(&["switchback", "api", "--admin", a]).await;
    assert_eq!(nothing.code, EXIT_REFUSED, "nothing to switch back to: {}", nothing.err);
    // A route without a progressive rollout has none to pause.
    let rollout = cli(&["rollout", "shop", "pause", "--admin", a]).await;
    assert_eq!(rollout.code, EXIT_REFUSED, "{}", rollout.err);
    // Nothing changed.
    assert_eq!(get_json(&proxy.admin_url("/status")).await["revision"], 1);
}

#[tokio::test]
async fn rollout_commands_steer_a_real_rollout() {
    let (stable, canary) = (Upstream::named("stable").await, Upstream::named("canary").await);
    let config = Config::slow_rollout(stable.addr, canary.addr);
    let proxy = TestProxy::start(&config.build()).await;
    let admin = proxy.admin_url("");
    let a = admin.as_str();
    let state = || async { get_json(&proxy.admin_url("/rollouts")).await[0]["state"].clone() };
    assert_eq!(state().await, "progressing");
    for (command, after) in [
        ("pause", "paused"),
        ("resume", "progressing"),
        ("promote", "promoted"),
        ("restart", "progressing"),
        ("abort", "aborted"),
    ] {
        let ran = cli(&["rollout", "shop", command, "--admin", a, "--json"]).await;
        assert_eq!(ran.code, EXIT_OK, "{command}: {}", ran.err);
        assert_eq!(state().await, after, "after {command}");
    }
    // A command the state refuses exits 1 with the proxy's reason.
    let again = cli(&["rollout", "shop", "resume", "--admin", a]).await;
    assert_eq!(again.code, EXIT_REFUSED, "{}", again.err);
    let shown = cli(&["status", "--admin", a]).await;
    assert!(shown.out.contains("aborted"), "status shows the rollout: {}", shown.out);
}

#[tokio::test]
async fn writes_need_the_token_from_a_file_or_the_config() {
    let (proxy, _ups, secrets) = proxy(true).await;
    let admin = proxy.admin_url("");
    let a = admin.as_str();
    let nowhere = secrets.path().join("absent.toml");
    let no_config = nowhere.to_str().unwrap();

    let refused = cli(&["trip", "canary", "--admin", a, "--config", no_config]).await;
    assert_eq!(refused.code, EXIT_REFUSED);
    assert!(refused.err.contains("401"), "{}", refused.err);
    // Reads need none.
    assert_eq!(cli(&["status", "--admin", a, "--config", no_config]).await.code, EXIT_OK);

    let token_file = secrets.path().join("token");
    let tripped =
        cli(&["trip", "canary", "--admin", a, "--config", no_config, "--token-file", token_file.to_str().unwrap()])
            .await;
    assert_eq!(tripped.code, EXIT_OK, "{}", tripped.err);

    // The proxy's own config names the token file: the operator on the
    // host needs nothing more.
    let config = proxy.config_path.to_str().unwrap();
    let reset = cli(&["reset", "canary", "--admin", a, "--config", config]).await;
    assert_eq!(reset.code, EXIT_OK, "{}", reset.err);

    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    let bad =
        cli(&["trip", "canary", "--admin", a, "--config", no_config, "--token-file", wrong.to_str().unwrap()]).await;
    assert_eq!(bad.code, EXIT_REFUSED);
    let missing = cli(&["trip", "canary", "--admin", a, "--token-file", nowhere.to_str().unwrap()]).await;
    assert_eq!(missing.code, EXIT_USAGE, "an unreadable token file is the caller's mistake");
}

#[tokio::test]
async fn usage_errors_exit_2_and_an_absent_proxy_exits_3() {
    let bad = cli(&["set", "api", "blue", "--admin", "http://127.0.0.1:9"]).await;
    assert_eq!(bad.code, EXIT_USAGE, "{}", bad.err);
    let tls = cli(&["status", "--admin", "https://127.0.0.1:9"]).await;
    assert_eq!(tls.code, EXIT_USAGE);

    let (addr, _held) = support::dead_addr();
    let url = format!("http://{addr}");
    let gone = cli(&["status", "--admin", &url]).await;
    assert_eq!(gone.code, EXIT_UNREACHABLE);
    assert!(gone.err.contains("cannot reach the admin API"), "{}", gone.err);
    let gone = cli(&["switchback", "api", "--admin", &url]).await;
    assert_eq!(gone.code, EXIT_UNREACHABLE);
}

#[tokio::test]
async fn watch_prints_a_frame_per_refresh_and_follows_changes() {
    let (proxy, _ups, _secrets) = proxy(false).await;
    let admin = proxy.admin_url("");
    let watch = cli(&["status", "--watch", "--interval", "0.1", "--count", "3", "--admin", &admin]).await;
    assert_eq!(watch.code, EXIT_OK, "{}", watch.err);
    assert_eq!(watch.out.matches("revision 1 ").count(), 3, "{}", watch.out);
    assert!(!watch.out.contains('\x1b'), "no terminal codes when stdout is not a terminal");

    // On a terminal each frame homes the cursor and clears the screen.
    let command =
        Top::try_parse_from(["cutover", "status", "-w", "--count", "2", "--interval", "0.1", "--admin", &admin])
            .unwrap()
            .command;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(execute(command, &mut out, &mut err, true).await, EXIT_OK);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2, "{out:?}");

    // A proxy that goes away mid-watch: the frame says so, the exit code too.
    let mut proxy = proxy;
    proxy.begin_stop();
    proxy.stop().await;
    let gone = cli(&["status", "-w", "--count", "1", "--interval", "0.1", "--admin", &admin]).await;
    assert_eq!(gone.code, EXIT_UNREACHABLE, "{}", gone.out);
    assert!(gone.out.contains("cannot reach the admin API"), "{}", gone.out);
}
