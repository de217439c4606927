//! `cutover demo` through the real binary: it tells the whole story (a hot
//! reload that starts a rollout of green, promoted step by step on healthy
//! verdicts; a rollout of the canary aborted on a failing verdict against
//! green, its baseline, with the reason; an admin switchback with revisions)
//! in a short run, exits 0 by itself or on Ctrl-C, and leaves nothing behind
//! — no listening port, no temp directory.
//!
//! Output is read line by line on threads; every wait has a deadline after
//! which the process is killed and the test fails with what it printed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demo's own length in the full-story test.
const DURATION_SECS: u64 = 20;
/// Generous bound on the whole process, startup and shutdown included, on
/// a loaded machine with a debug build.
const DEADLINE: Duration = Duration::from_secs(90);

/// A running `cutover demo`, killed if the test ends before it does.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("demo")
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover demo");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (is_err, pipe) in [(false, Box::new(out) as Box<dyn std::io::Read + Send>), (true, Box::new(err))] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Demo { child, lines, stdout: Vec::new(), stderr: Vec::new() }
    }

    fn take(&mut self, (is_err, line): (bool, String)) {
        if is_err {
            self.stderr.push(line);
        } else {
            self.stdout.push(line);
        }
    }

    /// Wait until stdout has a line containing `needle`.
    fn wait_for(&mut self, needle: &str, end: Instant) {
        if self.stdout.iter().any(|l| l.contains(needle)) {
            return;
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((is_err, line)) => {
                    let found = !is_err && line.contains(needle);
                    self.take((is_err, line));
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no output line with {needle:?} in time:\n{}", self.output()),
            }
        }
    }

    /// Wait for the process to exit and its pipes to close.
    fn wait_exit(&mut self, end: Instant) -> ExitStatus {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("cutover demo did not exit in time; killed. Output so far:\n{}", self.output());
            }
            while let Ok(line) = self.lines.try_recv() {
                self.take(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Both pipes close with the process (it spawns no children that
        // could hold them open): this ends.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.take(line);
        }
        status
    }

    fn output(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout.join("\n"), self.stderr.join("\n"))
    }

    fn stdout_text(&self) -> String {
        self.stdout.join("\n")
    }

    /// The address printed after `label` (`proxy     http://127.0.0.1:PORT/`).
    fn printed_addr(&self, label: &str) -> SocketAddr {
        let line = self
            .stdout
            .iter()
            .find(|l| l.trim_start().starts_with(label) && l.contains("http://"))
            .unwrap_or_else(|| panic!("no {label} URL printed:\n{}", self.output()));
        let rest = &line[line.find("http://").expect("url") + "http://".len()..];
        let addr: String = rest.chars().take_while(|c| !matches!(c, '/' | ' ')).collect();
        addr.parse().unwrap_or_else(|e| panic!("{label} address {addr:?}: {e}"))
    }

    /// The upstream addresses printed on the `upstreams` line.
    fn printed_upstreams(&self) -> Vec<SocketAddr> {
        let line = self
            .stdout
            .iter()
            .find(|l| l.trim_start().starts_with("upstreams"))
            .unwrap_or_else(|| panic!("no upstreams line:\n{}", self.output()));
        line.split([' ', ',']).filter_map(|w| w.parse::<SocketAddr>().ok()).collect()
    }

    /// The temp directory holding the printed config file.
    fn printed_dir(&self) -> PathBuf {
        let line = self
            .stdout
            .iter()
            .find(|l| l.trim_start().starts_with("config "))
            .unwrap_or_else(|| panic!("no config line:\n{}", self.output()));
        let path = line.trim_start().trim_start_matches("config").trim_start();
        let path = PathBuf::from(path.split(' ').next().unwrap_or_default());
        assert!(path.ends_with("cutover.toml"), "{line}");
        path.parent().expect("config dir").to_path_buf()
    }

    /// Nothing left: every printed port refuses connections, and the temp
    /// directory is gone.
    fn assert_nothing_left(&self) {
        let mut addrs = vec![self.printed_addr("proxy"), self.printed_addr("status")];
        let upstreams = self.printed_upstreams();
        assert_eq!(upstreams.len(), 3, "three upstreams printed");
        addrs.extend(upstreams);
        for addr in addrs {
            let connected = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
            assert!(connected.is_err(), "{addr} still accepts connections after the demo exited");
        }
        let dir = self.printed_dir();
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number after `marker` in `text` (e.g. `revision 4`).
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..].chars().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn a_short_demo_tells_the_whole_story_and_leaves_nothing_running() {
    let started = Instant::now();
    let mut demo = Demo::start(&["--duration", &DURATION_SECS.to_string(), "--seed", "7"]);
    let status = demo.wait_exit(started + DEADLINE);
    let out = demo.stdout_text();
    assert_eq!(status.code(), Some(0), "exit code\n{}", demo.output());

    // Where to look, and what to try by hand.
    for needle in ["/status", "/metrics", "/history", "curl -s -X PUT", "switchback"] {
        assert!(out.contains(needle), "{needle:?} missing\n{}", demo.output());
    }
    let proxy = demo.printed_addr("proxy");
    assert!(out.contains(&format!("http://{proxy}/")), "{}", demo.output());

    // Every phase, in order.
    let mut at = 0;
    for phase in ["phase 1/4", "phase 2/4", "phase 3/4", "phase 4/4"] {
        let found = out[at..].find(phase).unwrap_or_else(|| panic!("{phase} missing or out of order\n{out}"));
        at += found;
    }

    // The hot reload made revision 2, through the file watcher or the
    // fallback POST /reload, and started green's rollout.
    let reload = out.lines().find(|l| l.contains("Hot reload applied")).unwrap_or_else(|| panic!("no reload\n{out}"));
    assert_eq!(number_after(reload, "revision"), Some(2), "{reload}");
    assert!(reload.contains("rollout started; rollout step 1: green 10%"), "{reload}");

    // Green went up step by step, each after a healthy verdict, then was
    // promoted: in order, each with its revision.
    let mut at = out.find("phase 2/4").expect("phase 2");
    for step in [
        "step 1 of 3: green at 10%, the rollout started",
        "step 2 of 3: green at 50%, on a healthy verdict (green's guard: 0 of",
        "step 3 of 3: green at 100%, on a healthy verdict (green's guard: 0 of",
        "green PROMOTED through every step",
    ] {
        let found = out[at..].find(step).unwrap_or_else(|| panic!("{step:?} missing or out of order\n{out}"));
        at += found;
    }
    let promoted = out.lines().find(|l| l.contains("green PROMOTED")).expect("promotion line");
    assert!(promoted.contains("rollout promoted") && promoted.contains("blue 0%, green 100%, canary 0%"), "{promoted}");
    assert!(at < out.find("phase 3/4").expect("phase 3"), "green promoted before the canary's phase\n{out}");

    // The canary's rollout was aborted at its first step, by the judge
    // comparing it with green, and the route went back to green.
    let abort = out
        .lines()
        .find(|l| l.contains("rollout ABORTED"))
        .unwrap_or_else(|| panic!("the canary's rollout was not aborted\n{}", demo.output()));
    assert!(abort.contains("ABORTED at step 1 of 3"), "{abort}");
    assert!(abort.contains("canary failing: ") && abort.contains(" vs green "), "judged against green: {abort}");
    assert!(out.contains("Rolled back: the canary's weight is 0 and the route is back where it came from: blue 0%, green 100%, canary 0%."), "{out}");
    assert!(out.contains("The judge's evidence: canary "), "{out}");

    // The operator's move and the switchback, each with its revision.
    let shift = out.lines().find(|l| l.contains("-> revision")).unwrap_or_else(|| panic!("no PUT answer\n{out}"));
    let shift_revision = number_after(shift, "-> revision").expect("PUT revision");
    let back =
        out.lines().find(|l| l.contains("switchback to revision")).unwrap_or_else(|| panic!("no switchback\n{out}"));
    let back_revision = number_after(back, "switchback to revision").expect("switchback revision");
    assert_eq!(back_revision, shift_revision + 1, "{shift}\n{back}");
    assert!(back.contains("the route is now blue 0%, green 100%, canary 0%"), "{back}");

    // The history tells the same story.
    for cause in [
        "route shop: rollout step 2: green 50%",
        "route shop: rollout promoted",
        "route shop: rollout aborted: canary failing: ",
        "admin: switchback of route shop",
    ] {
        assert!(out.contains(cause), "history lacks {cause:?}\n{out}");
    }

    // Live figures were shown (plain lines, since stdout is a pipe).
    assert!(out.lines().filter(|l| l.starts_with('[') && l.contains("| blue")).count() >= 5, "{out}");

    // It ended by itself, cleanly, and left nothing.
    assert!(out.contains("== the end"), "{out}");
    assert!(out.contains("the proxy shut down cleanly"), "{out}");
    demo.assert_nothing_left();
    assert!(started.elapsed() < Duration::from_secs(DURATION_SECS + 20), "took {:?}", started.elapsed());
}

#[test]
fn ctrl_c_ends_the_demo_early_and_cleanly() {
    let started = Instant::now();
    let mut demo = Demo::start(&["--duration", "120"]);
    demo.wait_for("phase 2/4", started + DEADLINE);
    let kill = Command::new("kill").arg("-INT").arg(demo.child.id().to_string()).status().expect("run kill");
    assert!(kill.success(), "kill -INT failed");
    let status = demo.wait_exit(Instant::now() + Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit code after Ctrl-C\n{}", demo.output());
    let out = demo.stdout_text();
    assert!(out.contains("== interrupted at"), "{out}");
    assert!(out.contains("the proxy shut down cleanly"), "{out}");
    demo.assert_nothing_left();
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_duration_too_short_for_the_story_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--duration", "3"])
        .output()
        .expect("run cutover demo");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
