//! Where access-log lines go, and the buffer that keeps writing them off
//! the request path.
//!
//! A request's line is made on the thread that finishes the request and
//! appended to one shared buffer of lines; the request goes on. Making the
//! line there, rather than sending the record to the writer, keeps every
//! allocation of a record freed on the thread that made it (memory freed
//! by another thread goes back to the allocator through its slow path) and
//! sends nothing but bytes across. At most `queue` lines, and at most
//! [`BYTES_PER_LINE`] times as many bytes, wait in the buffer: when the sink
//! is slower than the traffic, or blocked outright, like a pipe nobody
//! reads, further lines are dropped and counted in
//! `cutover_access_log_dropped_total`, never queued without bound. The
//! bytes are bounded as well as the lines because a line carries the
//! client's path and `Host`, which a client can make tens of kilobytes
//! long.
//!
//! One writer thread owns the sink. Woken by the first line after it went
//! idle, it holds the lines for the config's `flush` interval, or until
//! [`FULL_BYTES`] or half the queue wait, then takes every waiting line at
//! once and writes them in one call. A write costs far more per call than
//! per byte (a wake-up, two context switches, the file system's
//! bookkeeping), so the fewer calls, the cheaper each line: a writer woken
//! for every line would cost each request more than the rest of its work.
//! While lines keep coming it holds again after each write instead of going
//! idle, so a steady stream costs one timer wake-up per batch, and the
//! request path wakes it only after a lull or when the buffer fills. A line
//! is visible at most `flush` after its request ended, plus the time to
//! write the batches before it; [`AccessLog::flush`] and closing the log
//! write at once.
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
use std::time::{Duration, Instant};

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
    /// The longest the writer holds a line before writing it.
    pub flush: Duration,
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
    /// The waiting lines are wanted in the sink now ([`AccessLog::flush`]).
    urgent: bool,
    /// What the writer does, which says whether a new line must wake it.
    writer: Doing,
}

/// What the writer thread is doing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Doing {
    /// Waiting on `arrived` for the first line, which wakes it.
    Idle,
    /// Holding the lines until `flush` passes: only a line that makes the
    /// buffer full, a flush or the close wakes it early.
    Holding,
    /// Writing, or about to look at the buffer on its own.
    #[default]
    Writing,
}

/// Waiting lines that make the writer write before `flush` passes: a
/// quarter of a megabyte, a few hundred lines, makes a write's fixed cost
/// small beside its bytes. Half the queue does too, so that a small queue
/// is written before it overflows.
const FULL_BYTES: usize = 256 * 1024;

/// Bytes that may wait per line of the queue, on average: far above a
/// usual line, so that only lines a client swelled (a long path or `Host`)
/// meet this bound before the count of lines.
const BYTES_PER_LINE: usize = 1024;

#[derive(Debug)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// Signalled when a line arrives while the writer is idle, when the
    /// buffer fills while it holds, on a flush and on close.
    arrived: Condvar,
    /// Half the queue: lines that make the buffer full (see [`FULL_BYTES`]).
    full_lines: u64,
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

    /// Whether enough lines wait to write them without waiting for `flush`.
    fn full(&self, waiting: &Waiting) -> bool {
        waiting.bytes.len() >= FULL_BYTES || waiting.lines >= self.full_lines
    }
}

/// The handle the request path logs through. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    format: Format,
    sample: f64,
    queue: u64,
    /// The most bytes that may wait ([`BYTES_PER_LINE`] per line of the queue).
    queue_bytes: usize,
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
        let queue = options.queue.max(1) as u64;
        let shared = Arc::new(Shared {
            waiting: Mutex::default(),
            arrived: Condvar::new(),
            full_lines: queue.div_ceil(2),
            #[cfg(test)]
            counts: Default::default(),
        });
        let (finished, done) = mpsc::channel();
        let reopen = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            sink,
            destination: options.destination.clone(),
            flush: options.flush,
            reopen: reopen.clone(),
            written: written.clone(),
        };
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
            queue,
            queue_bytes: options.queue.max(1).saturating_mul(BYTES_PER_LINE),
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
            // A line longer than the whole bound still goes to an empty buffer.
            let too_many_bytes = waiting.lines > 0 && waiting.bytes.len() + line.len() > self.queue_bytes;
            if waiting.closed || waiting.lines >= self.queue || too_many_bytes {
                drop(waiting);
                self.dropped.inc();
                return;
            }
            // Only a holding writer is woken by a line that fills the buffer,
            // once: when it was not full before this line.
            let holding_short = waiting.writer == Doing::Holding && !self.shared.full(&waiting);
            waiting.bytes.extend_from_slice(&line);
            waiting.lines += 1;
            let wake = match waiting.writer {
                Doing::Idle => {
                    waiting.writer = Doing::Holding;
                    true
                }
                Doing::Holding => holding_short && self.shared.full(&waiting),
                Doing::Writing => false,
            };
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
        self.shared.lock().urgent = true;
        self.shared.arrived.notify_one();
        let deadline = Instant::now() + grace;
        while self.written.load(Ordering::Acquire) < target {
            if Instant::now() >= deadline {
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
        self.end();
        let done = self.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match done.recv_timeout(grace) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Take no more lines; the writer writes the waiting ones and ends.
    fn end(&self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
    }
}

impl Drop for AccessLog {
    /// A log nothing uses any more, such as the old one after a reload that
    /// changed its settings: its writer writes what waits, closes the sink
    /// and ends, instead of waiting for lines forever.
    fn drop(&mut self) {
        self.end();
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
    /// The longest a line is held before it is written.
    flush: Duration,
    reopen: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, shared: &Shared) {
        // Swapped with the shared buffer, so each side keeps its capacity.
        let mut batch = Vec::new();
        let mut wrote = false;
        loop {
            let (lines, closed) = self.next_batch(shared, &mut batch, wrote);
            wrote = lines > 0;
            if wrote {
                self.write(&batch, lines);
                #[cfg(test)]
                shared.counts.1.fetch_add(1, Ordering::Relaxed);
                if batch.capacity() > 4 * FULL_BYTES {
                    // A burst's buffer goes back once it is written.
                    batch.clear();
                    batch.shrink_to(FULL_BYTES);
                }
            } else if closed {
                return;
            }
        }
    }

    /// Wait for lines (unless the last round `wrote` some: then hold right
    /// away, as a steady stream keeps coming), hold them, and swap them into
    /// `batch`; say how many lines it holds, and whether the log is closed.
    fn next_batch(&self, shared: &Shared, batch: &mut Vec<u8>, wrote: bool) -> (u64, bool) {
        let mut waiting = shared.lock();
        if !wrote {
            while waiting.lines == 0 && !waiting.closed {
                // The first line to arrive wakes the writer.
                waiting.writer = Doing::Idle;
                waiting = shared.arrived.wait(waiting).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        waiting.writer = Doing::Holding;
        let until = Instant::now() + self.flush;
        while !waiting.closed && !waiting.urgent && !shared.full(&waiting) {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) else {
                break;
            };
            waiting = match shared.arrived.wait_timeout(waiting, left) {
                Ok((waiting, _)) => waiting,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        waiting.writer = Doing::Writing;
        waiting.urgent = false;
        batch.clear();
        std::mem::swap(batch, &mut waiting.bytes);
        (std::mem::take(&mut waiting.lines), waiting.closed)
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

    fn options(destination: Destination, queue: usize, flush: Duration) -> Options {
        Options { destination, format: Format::Json, sample: 0.25, queue, flush }
    }

    const SOON: Duration = Duration::from_millis(10);
    /// Longer than any test waits: whatever is written, the interval did not write.
    const NEVER: Duration = Duration::from_secs(3600);

    /// A log writing to `access.log` in a temporary directory of its own
    /// (removed when the returned guard drops).
    fn file_log(queue: usize, flush: Duration) -> (tempfile::TempDir, PathBuf, AccessLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(&options(Destination::File(path.clone()), queue, flush), counter()).expect("start");
        (dir, path, log)
    }

    /// Wait up to ten seconds for `done`, failing the test with `what`.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn batches(log: &AccessLog) -> u64 {
        log.shared.counts.1.load(Ordering::Relaxed)
    }

    #[test]
    fn lines_are_held_until_a_flush_writes_them_at_once_and_close_waits_for_them() {
        let (_dir, path, log) = file_log(64, NEVER);
        for _ in 0..10 {
            log.log(&sample());
        }
        // Woken by the first line, the writer holds them all.
        wait_until("the writer never held the lines", || log.shared.lock().writer == Doing::Holding);
        assert_eq!((batches(&log), log.shared.lock().lines), (0, 10), "held, not written");
        assert!(log.flush(Duration::from_secs(10)), "flushed");
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 10, "flush waits for every line");
        assert_eq!(batches(&log), 1, "in one write");
        assert!(log.close(Duration::from_secs(10)), "writer finished");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 10);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
    }

    /// Lines a client swelled (a 10 KB path each) meet the bound on bytes
    /// long before the bound on lines: what waits stays near the queue's
    /// bytes, the rest is dropped and counted.
    #[test]
    fn long_lines_are_bounded_by_bytes_as_well_as_by_count() {
        let dropped = counter();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        // 64 lines of queue: 64 KiB, below the 256 KiB that would make the
        // writer take them early, so every accepted line waits.
        let log =
            AccessLog::start(&options(Destination::File(path.clone()), 64, NEVER), dropped.clone()).expect("start");
        let long = format!("/{}", "a".repeat(10_000));
        let record = Record { uri: long.parse().expect("uri"), ..sample() };
        for _ in 0..20 {
            log.log(&record);
        }
        let (lines, bytes) = {
            let waiting = log.shared.lock();
            (waiting.lines, waiting.bytes.len())
        };
        assert!(bytes <= 64 * BYTES_PER_LINE, "{bytes} bytes wait");
        assert_eq!(lines, 6, "as many whole lines as fit in 64 KiB");
        assert_eq!(dropped.get(), 14);
        assert!(log.close(Duration::from_secs(10)), "writer finished");
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 6);
    }

    #[test]
    fn half_the_queue_or_a_full_buffer_is_written_without_waiting_for_the_interval() {
        let (_dir, path, log) = file_log(8, NEVER);
        for _ in 0..4 {
            log.log(&sample());
        }
        wait_for_lines(&path, 4);
        let log =
            AccessLog::start(&options(Destination::File(path.clone()), 1 << 20, NEVER), counter()).expect("start");
        let mut line = Vec::new();
        sample().write_line(Format::Json, &mut line);
        let lines = FULL_BYTES.div_ceil(line.len());
        for _ in 0..lines {
            log.log(&sample());
        }
        wait_for_lines(&path, 4 + lines);
    }

    #[test]
    fn a_steady_stream_does_not_wake_the_writer_for_each_batch() {
        let flush = Duration::from_millis(20);
        let (_dir, path, log) = file_log(4096, flush);
        // A line every quarter of the interval, for about twelve of them.
        for _ in 0..48 {
            log.log(&sample());
            thread::sleep(flush / 4);
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
    fn a_dropped_log_writes_what_waits_and_its_writer_ends() {
        let (_dir, path, log) = file_log(64, NEVER);
        log.log(&sample());
        let shared = log.shared.clone();
        drop(log);
        // The writer holds the only other reference, until it ends.
        wait_until("the writer never ended", || Arc::strong_count(&shared) == 1);
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 1);
    }

    #[test]
    fn sampling_keeps_every_failure_and_a_share_of_the_rest() {
        let log = AccessLog::start(&options(Destination::Stderr, 1, SOON), counter()).expect("start");
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
        let log = AccessLog::start(&options(Destination::File(path.clone()), 64, SOON), counter()).expect("start");
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
        let log =
            AccessLog::start(&options(Destination::File(fifo.clone()), 16, SOON), dropped.clone()).expect("start");
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
        wait_until("line never written", || {
            std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) >= lines
        });
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
