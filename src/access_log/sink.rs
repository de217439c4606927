//! Where access-log lines go, and the buffer that keeps writing them off
//! the request path.
//!
//! A request's line is made on the thread that finishes the request and
//! appended to one shared buffer of lines; the request goes on. Making the
//! line there, rather than sending the record to the writer, keeps every
//! allocation of a record freed on the thread that made it (memory freed
//! by another thread goes back to the allocator through its slow path) and
//! sends nothing but bytes across. At most `queue` lines wait in the buffer:
//! when the sink is slower than the traffic, or blocked outright, like a
//! pipe nobody reads, further lines are dropped and counted in
//! `cutover_access_log_dropped_total`, never queued without bound.
//!
//! One writer thread owns the sink. Woken by the first line after it went
//! idle, it waits [`LINGER`] for more, then takes every waiting line at
//! once and writes them in one call, until the buffer is empty: a writer
//! woken for every line would cost each request a wake-up, two context
//! switches and a write of its own, more than the rest of the request's
//! work, where lingering spreads them over every line of a batch. While
//! lines keep coming it lingers again after each write instead of going
//! idle, so a steady stream costs one timer wake-up per batch, and the
//! request path wakes it only after a lull. A line is visible at most
//! [`LINGER`] after its request ended, plus the time to write the batches
//! before it.
//!
//! A file is opened for appending, so `copytruncate` rotation is safe; after
//! a rename rotation, [`AccessLog::reopen`] (SIGUSR1) makes the writer open
//! the path again before its next batch.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use prometheus::IntCounter;

use super::record::{Format, Record};

/// Where lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
    /// A file, created if missing, appended to.
    File(PathBuf),
}

/// How the log is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where lines go.
    pub destination: Destination,
    /// The line format.
    pub format: Format,
    /// The share of successful requests logged, 0.0 to 1.0; failed requests
    /// are always logged.
    pub sample: f64,
    /// How many lines may wait for the writer before new ones are dropped.
    pub queue: usize,
}

/// A failure to open the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be opened for appending.
    #[error("cannot open access log {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access log writer: {0}")]
    Thread(io::Error),
}

/// The lines waiting for the writer, shared by the request path and the
/// writer thread.
#[derive(Debug, Default)]
struct Waiting {
    /// The lines, each ending in `\n`.
    bytes: Vec<u8>,
    /// How many lines `bytes` holds.
    lines: u64,
    /// No more lines come: the writer writes what waits and ends.
    closed: bool,
    /// The writer waits on `arrived` for the next line; otherwise it
    /// lingers or writes, and looks at the buffer again on its own.
    idle: bool,
}

#[derive(Debug)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// Signalled when a line arrives while the writer is idle, and on close.
    arrived: Condvar,
    /// Wake-ups by the request path, and batches written.
    #[cfg(test)]
    counts: (AtomicU64, AtomicU64),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock leaves whole lines behind (a line
        // is appended in one call), so the buffer is still good.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The handle the request path logs through. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    format: Format,
    sample: f64,
    queue: u64,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
    /// Lines queued, and lines written (or lost to a failed write): the
    /// difference is what [`AccessLog::flush`] waits for.
    queued: AtomicU64,
    written: Arc<AtomicU64>,
    /// Signalled by the writer thread when it has written everything and
    /// ended. In a mutex only so that the handle can be shared between
    /// threads; it is read once, by `close`.
    done: Mutex<Receiver<()>>,
}

thread_local! {
    /// Where this thread makes a line before it joins the shared buffer, so
    /// the buffer's lock is held for a copy, not for the formatting.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AccessLog {
    /// Open the sink and start the writer thread. Lines dropped for a full
    /// buffer are counted on `dropped`.
    pub fn start(options: &Options, dropped: IntCounter) -> Result<AccessLog, SinkError> {
        let sink = Sink::open(&options.destination)?;
        let shared = Arc::new(Shared {
            waiting: Mutex::default(),
            arrived: Condvar::new(),
            #[cfg(test)]
            counts: Default::default(),
        });
        let (finished, done) = mpsc::channel();
        let reopen = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer =
            Writer { sink, destination: options.destination.clone(), reopen: reopen.clone(), written: written.clone() };
        let for_writer = shared.clone();
        thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                writer.run(&for_writer);
                let _ = finished.send(());
            })
            .map_err(SinkError::Thread)?;
        Ok(AccessLog {
            shared,
            format: options.format,
            sample: options.sample.clamp(0.0, 1.0),
            queue: options.queue.max(1) as u64,
            reopen,
            dropped,
            queued: AtomicU64::new(0),
            written,
            done: done.into(),
        })
    }

    /// Whether a request is logged: always when it failed; otherwise when
    /// `roll` (uniform in `[0, 1)`, from the request's seeded RNG) falls
    /// under the sample share. Asked before a record is built, so an
    /// unsampled request allocates nothing for the log.
    pub fn wants(&self, failed: bool, roll: f64) -> bool {
        failed || roll < self.sample
    }

    /// Make the record's line and hand it to the writer. Never waits on
    /// the sink: a full buffer drops the line and counts the drop.
    pub fn log(&self, record: &Record<'_>) {
        SCRATCH.with(|scratch| {
            let mut line = scratch.borrow_mut();
            line.clear();
            record.write_line(self.format, &mut line);
            let mut waiting = self.shared.lock();
            if waiting.closed || waiting.lines >= self.queue {
                drop(waiting);
                self.dropped.inc();
                return;
            }
            let wake = std::mem::take(&mut waiting.idle);
            waiting.bytes.extend_from_slice(&line);
            waiting.lines += 1;
            drop(waiting);
            self.queued.fetch_add(1, Ordering::Relaxed);
            if wake {
                #[cfg(test)]
                self.shared.counts.0.fetch_add(1, Ordering::Relaxed);
                self.shared.arrived.notify_one();
            }
        });
    }

    /// Wait up to `grace` for the lines queued so far to be written, as
    /// at shutdown, when the process is about to exit; says whether they
    /// were. A writer stuck on a blocked sink is not waited for longer.
    pub fn flush(&self, grace: Duration) -> bool {
        let target = self.queued.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + grace;
        while self.written.load(Ordering::Acquire) < target {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Make the writer open its file again before the next batch (after a
    /// rotation that renamed it). No effect on stdout and stderr.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Stop taking lines and wait up to `grace` for the waiting ones to be
    /// written. Says whether the writer finished in time; a writer stuck on a
    /// blocked sink is left behind rather than holding up shutdown.
    pub fn close(self, grace: Duration) -> bool {
        let AccessLog { shared, done, .. } = self;
        shared.lock().closed = true;
        shared.arrived.notify_one();
        let done = match done.into_inner() {
            Ok(done) => done,
            Err(poisoned) => poisoned.into_inner(),
        };
        match done.recv_timeout(grace) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

enum Sink {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File(File),
}

impl Sink {
    fn open(destination: &Destination) -> Result<Sink, SinkError> {
        Ok(match destination {
            Destination::Stdout => Sink::Stdout(io::stdout()),
            Destination::Stderr => Sink::Stderr(io::stderr()),
            Destination::File(path) => Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SinkError::Open { path: path.clone(), source })?,
            ),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::Stderr(err) => err.lock().write_all(bytes),
            Sink::File(file) => file.write_all(bytes),
        }
    }
}

struct Writer {
    sink: Sink,
    destination: Destination,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

/// How long the writer, woken from idle by a line, waits for more before
/// writing. While it waits (or writes) it is not waiting on the buffer, so
/// the lines made meanwhile wake nobody. At the default `queue` of 8,192
/// this drops lines only above about 400,000 a second.
const LINGER: Duration = Duration::from_millis(20);

impl Writer {
    fn run(mut self, shared: &Shared) {
        // Swapped with the shared buffer, so each side keeps its capacity.
        let mut batch = Vec::new();
        while let Some(mut closed) = Self::woken(shared) {
            // Linger and write for as long as each lingering brings lines.
            loop {
                if !closed {
                    thread::sleep(LINGER);
                }
                let wrote;
                (wrote, closed) = self.drain(shared, &mut batch);
                if !wrote || closed {
                    break;
                }
            }
        }
    }

    /// Wait, idle, for the first line; say whether the log is closed by
    /// then. `None` once it is closed and every line is written.
    fn woken(shared: &Shared) -> Option<bool> {
        let mut waiting = shared.lock();
        while waiting.lines == 0 && !waiting.closed {
            // The first line to arrive wakes the writer (and clears `idle`).
            waiting.idle = true;
            waiting = shared.arrived.wait(waiting).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        waiting.idle = false;
        (waiting.lines > 0).then_some(waiting.closed)
    }

    /// Write batches until the buffer is empty, without lingering between
    /// them; say whether any line was written, and whether the log is closed.
    fn drain(&mut self, shared: &Shared, batch: &mut Vec<u8>) -> (bool, bool) {
        let mut wrote = false;
        loop {
            let (lines, closed) = {
                let mut waiting = shared.lock();
                batch.clear();
                std::mem::swap(batch, &mut waiting.bytes);
                (std::mem::take(&mut waiting.lines), waiting.closed)
            };
            if lines == 0 {
                return (wrote, closed);
            }
            self.write(batch, lines);
            #[cfg(test)]
            shared.counts.1.fetch_add(1, Ordering::Relaxed);
            wrote = true;
        }
    }

    fn write(&mut self, lines: &[u8], count: u64) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            match Sink::open(&self.destination) {
                Ok(sink) => self.sink = sink,
                Err(err) => tracing::warn!(error = %err, "access log not reopened; writing to the old file"),
            }
        }
        if let Err(err) = self.sink.write_all(lines) {
            tracing::warn!(error = %err, "access log write failed; lines lost");
        }
        self.written.fetch_add(count, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::access_log::record::tests::sample;

    fn counter() -> IntCounter {
        IntCounter::new("dropped", "test").expect("counter")
    }

    fn options(destination: Destination, queue: usize) -> Options {
        Options { destination, format: Format::Json, sample: 0.25, queue }
    }

    #[test]
    fn lines_reach_the_file_and_close_waits_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(&options(Destination::File(path.clone()), 64), counter()).expect("start");
        for _ in 0..10 {
            log.log(&sample());
        }
        assert!(log.flush(Duration::from_secs(10)), "flushed");
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 10, "flush waits for every line");
        assert!(log.close(Duration::from_secs(10)), "writer finished");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 10);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
    }

    #[test]
    fn a_steady_stream_does_not_wake_the_writer_for_each_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(&options(Destination::File(path.clone()), 4096), counter()).expect("start");
        // A line every quarter of LINGER, for about twelve of them.
        for _ in 0..48 {
            log.log(&sample());
            thread::sleep(LINGER / 4);
        }
        assert!(log.flush(Duration::from_secs(10)), "flushed");
        let (wakes, batches) =
            (log.shared.counts.0.load(Ordering::Relaxed), log.shared.counts.1.load(Ordering::Relaxed));
        assert!(batches > 1, "the lines came in several batches ({batches})");
        assert!(
            wakes < batches,
            "the writer kept lingering instead of being woken for each batch: {wakes} wake-ups, {batches} batches"
        );
        assert!(log.close(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 48);
    }

    #[test]
    fn sampling_keeps_every_failure_and_a_share_of_the_rest() {
        let log = AccessLog::start(&options(Destination::Stderr, 1), counter()).expect("start");
        assert!(log.wants(true, 0.99), "a failure is always logged");
        assert!(log.wants(false, 0.1));
        assert!(!log.wants(false, 0.25));
        assert!(!log.wants(false, 0.9));
    }

    #[test]
    fn reopen_follows_a_renamed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let log = AccessLog::start(&options(Destination::File(path.clone()), 64), counter()).expect("start");
        log.log(&sample());
        wait_for_lines(&path, 1);
        std::fs::rename(&path, &rotated).expect("rotate");
        log.reopen();
        log.log(&sample());
        assert!(log.close(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&rotated).expect("old").lines().count(), 1);
        assert_eq!(std::fs::read_to_string(&path).expect("new").lines().count(), 1);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_blocked_sink_drops_and_counts_and_never_waits() {
        // A pipe nobody reads: once its buffer is full, the writer blocks.
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(status.success());
        // Opening a FIFO for writing waits for a reader: hold one open that never reads.
        let reader = OpenOptions::new().read(true).custom_flags_nonblock().open(&fifo).expect("reader");
        // Fill the pipe first, so that the writer's first write blocks
        // however few records reach it before the queue fills.
        let mut filler = OpenOptions::new().write(true).custom_flags_nonblock().open(&fifo).expect("filler");
        let chunk = [b'x'; 4096];
        while filler.write(&chunk).is_ok() {}
        let dropped = counter();
        let log = AccessLog::start(&options(Destination::File(fifo.clone()), 16), dropped.clone()).expect("start");
        let started = Instant::now();
        // Far more than the pipe's buffer and the queue together can hold.
        for _ in 0..20_000 {
            log.log(&sample());
        }
        let spent = started.elapsed();
        assert!(dropped.get() > 0, "drops are counted");
        assert!(spent < Duration::from_secs(5), "logging never waited on the sink ({spent:?})");
        // On a busy machine the writer may not have run at all yet: feed it
        // until the pipe is full, then fill the queue behind it.
        // A one-byte write of our own that would block says it is full.
        let mut probe = OpenOptions::new().write(true).custom_flags_nonblock().open(&fifo).expect("probe");
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.write(b"\n").map_or_else(|e| e.kind() != io::ErrorKind::WouldBlock, |_| true) {
            assert!(Instant::now() < deadline, "the pipe never filled");
            log.log(&sample());
            thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..64 {
            log.log(&sample());
        }
        // The writer is stuck on the full pipe; flushing and closing do not hang.
        assert!(!log.flush(Duration::from_millis(50)));
        assert!(!log.close(Duration::from_millis(50)));
        drop((reader, filler));
    }

    fn wait_for_lines(path: &std::path::Path, lines: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) < lines {
            assert!(Instant::now() < deadline, "line never written");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trait NonBlock {
        fn custom_flags_nonblock(&mut self) -> &mut Self;
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    impl NonBlock for OpenOptions {
        fn custom_flags_nonblock(&mut self) -> &mut Self {
            use std::os::unix::fs::OpenOptionsExt;
            self.custom_flags(libc::O_NONBLOCK)
        }
    }
}
