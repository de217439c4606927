//! The real `cutover` binary as a child process, for tests of what only a
//! process shows: exit codes, signals, log lines, the command line.
//! Its waits are blocking (threads, not tasks), so a test using it with the
//! async parts of the harness runs those on a runtime of their own.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// `cutover` with plain (uncoloured) info logs.
pub fn cutover() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// `cutover run`, killed (by its own pid) if the test ends before it does.
/// Its stderr is read on a thread, so the child never blocks on a full pipe.
pub struct Running {
    /// The process.
    pub child: Child,
    stderr: mpsc::Receiver<String>,
    /// The stderr lines read so far.
    pub lines: Vec<String>,
}

impl Running {
    /// `cutover [extra…] run --config config`, logging at info.
    pub fn start(config: &Path, extra: &[&str]) -> Running {
        Running::start_with_log(config, extra, "info")
    }

    /// The same with `RUST_LOG=rust_log`.
    pub fn start_with_log(config: &Path, extra: &[&str], rust_log: &str) -> Running {
        Running::spawn(cutover(), config, extra, rust_log)
    }

    /// [`Running::start`] of another build of the binary, at `binary`.
    pub fn start_binary(binary: &Path, config: &Path, extra: &[&str]) -> Running {
        let mut cmd = Command::new(binary);
        cmd.env("NO_COLOR", "1");
        Running::spawn(cmd, config, extra, "info")
    }

    fn spawn(mut cmd: Command, config: &Path, extra: &[&str], rust_log: &str) -> Running {
        let mut child = cmd
            .env("RUST_LOG", rust_log)
            .args(extra)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover run");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, stderr, lines: Vec::new() }
    }

    /// Wait for a stderr line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str) {
        if !self.try_wait_for_log(needle) {
            panic!("no log line with {needle:?} within {DEADLINE:?}; got:\n{}", self.lines.join("\n"));
        }
    }

    /// Wait for a stderr line containing `needle`; `false` if stderr closed
    /// (the process ended) or the deadline passed first.
    pub fn try_wait_for_log(&mut self, needle: &str) -> bool {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.lines.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Wait for the "serving …" log line containing `needle` (`"serving
    /// traffic"`, `"serving admin API"`, …) and return the port it names:
    /// the binary binds what the config says, port 0 included, and logs
    /// what it got. A port found free and released before the binary binds
    /// it could be taken by a parallel test meanwhile.
    pub fn wait_for_port(&mut self, needle: &str) -> u16 {
        self.wait_for_log(needle);
        bound_port(self.lines.last().map(String::as_str).unwrap_or_default())
    }

    /// Wait for the process to exit; then collect the rest of its stderr.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            assert!(Instant::now() < end, "cutover did not exit within {DEADLINE:?}:\n{}", self.lines.join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipe closes with the process: this ends.
        while let Ok(line) = self.stderr.recv_timeout(DEADLINE) {
            self.lines.push(line);
        }
        status
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Send `signal` (`-TERM`, `-HUP`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port of the `127.0.0.1:PORT` address in a "serving" log line, text
/// or JSON.
pub fn bound_port(line: &str) -> u16 {
    let at = line.find("127.0.0.1:").unwrap_or_else(|| panic!("no address in {line:?}")) + "127.0.0.1:".len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no port in {line:?}"))
}
