//! The systemd unit (`docker/systemd/cutover.service`) cannot drift from the
//! configs it runs: its stop timeout outlasts the graceful stop of each
//! shipped config, reloads are SIGHUPs, stops are SIGTERMs, and the unit
//! passes `systemd-analyze verify` where systemd is installed (the test says
//! it skipped that part otherwise; CI need not have systemd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(root().join("docker/systemd/cutover.service")).expect("docker/systemd/cutover.service")
}

/// `Key=value` settings of the unit's `[section]`, every occurrence, in order.
fn settings(unit: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut found = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.to_string();
        } else if current == format!("[{section}]") && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    found.push(v.trim().to_string());
                }
            }
        }
    }
    found
}

fn one(unit: &str, key: &str) -> String {
    let all = settings(unit, "Service", key);
    assert_eq!(all.len(), 1, "docker/systemd/cutover.service: {key}= must be set once, found {all:?}");
    all[0].clone()
}

#[test]
fn the_stop_timeout_outlasts_the_graceful_stop_of_every_shipped_config() {
    let unit = unit_text();
    let stop = humantime::parse_duration(&one(&unit, "TimeoutStopSec")).expect("TimeoutStopSec is a duration");
    for file in ["config/cutover.toml", "docker/cutover.toml"] {
        let config = cutover::config::load(&root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let graceful = config.server.shutdown_delay + config.server.drain_timeout;
        assert!(
            stop > graceful,
            "docker/systemd/cutover.service: TimeoutStopSec {stop:?} must exceed {file}'s shutdown_delay + drain_timeout = {graceful:?}"
        );
    }
    assert!(stop <= Duration::from_secs(600), "a stop that hangs should not hang for long");
}

#[test]
fn the_unit_reloads_by_sighup_stops_by_sigterm_and_is_hardened() {
    let unit = unit_text();
    assert_eq!(one(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&unit, "KillSignal"), "SIGTERM");
    let start = one(&unit, "ExecStart");
    let config = start.split_once("--config ").map(|(_, path)| path.trim()).expect("ExecStart passes --config");
    assert!(start.contains(" run "), "ExecStart runs the proxy: {start}");
    assert_eq!(one(&unit, "ExecStartPre"), format!("/usr/local/bin/cutover check {config}"));
    for (key, value) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("DynamicUser", "yes")] {
        assert_eq!(one(&unit, key), value, "{key}");
    }
    // The state file's directory is the one writable place.
    assert_eq!(one(&unit, "StateDirectory"), "cutover");
    // The shipped configs bind no port below 1024, so no capability is kept.
    assert!(settings(&unit, "Service", "AmbientCapabilities").is_empty());
    assert_eq!(one(&unit, "CapabilityBoundingSet"), "");
    for file in ["config/cutover.toml", "docker/cutover.toml"] {
        let config = cutover::config::load(&root().join(file)).unwrap();
        let ports = config.server.listen.iter().map(|a| a.port()).chain([config.admin.listen.port()]);
        for port in ports {
            assert!(port >= 1024, "{file} binds {port}: the unit needs AmbientCapabilities=CAP_NET_BIND_SERVICE");
        }
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    // verify checks that the programs exist and that `man cutover(1)` (the
    // unit's Documentation=) finds a page: the built binary stands in for
    // the installed one, and writes its man page where `man` looks.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_text().replace("/usr/local/bin/cutover", env!("CARGO_BIN_EXE_cutover"));
    let path = dir.path().join("cutover.service");
    std::fs::write(&path, unit).unwrap();
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let page = Command::new(env!("CARGO_BIN_EXE_cutover")).arg("man").output().expect("cutover man");
    assert!(page.status.success());
    std::fs::write(man1.join("cutover.1"), page.stdout).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only what concerns this unit counts: verify also loads the units it
    // names (network-online.target, multi-user.target), which may have
    // complaints of their own on a machine that does not boot with systemd.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("cutover.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify docker/systemd/cutover.service:\n{stderr}");
}
