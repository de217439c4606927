//! The per-connection watchdog: what a connection is doing, and when it is
//! due to close.
//!
//! [`Activity`] counts the requests in flight on one connection and keeps,
//! in atomics the request path updates without a lock or a clock read per
//! request, when the connection went idle, when a pending request head
//! started, since when writes to the client have been blocked, and (over
//! HTTP/2) how long each response stream has waited for the client's
//! flow-control window. [`Watchdog`] holds the rules: when the one timer
//! fires, it says whether to close at once, close gracefully, or look again
//! and when, so a request costs no timer work of its own. [`Tracked`] and
//! [`TrackedBody`] keep a request counted until its response body ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::limits::ConnLimits;
use crate::body::ProxyBody;

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Requests in flight.
    pub(super) active: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `epoch` at which the first byte of a request head
    /// arrived that has not become a request yet ([`NO_HEAD`]: none).
    head_started_ms: AtomicU64,
    /// The connection speaks HTTP/2, whose frames between requests are not
    /// request heads: no header timer.
    pub(super) h2: AtomicBool,
    /// The head just read carried both `Content-Length` and
    /// `Transfer-Encoding` (hyper drops the former before we could see it).
    pub(super) framing_conflict: AtomicBool,
    /// No byte has arrived yet (after the TLS handshake, if any).
    pub(super) silent: AtomicBool,
    /// Milliseconds since `epoch` at which a write to the client last found
    /// its socket full, with nothing written since ([`NOT_BLOCKED`]: none).
    write_blocked_ms: AtomicU64,
    /// HTTP/2 only: the stall clock of each response stream that has sent
    /// a chunk (see [`TrackedBody`]). Ended streams' entries are swept
    /// when the list grows.
    stream_stalls: Mutex<Vec<Weak<AtomicU64>>>,
}

/// `write_blocked_ms` when the last write went through; a stream's stall
/// clock when hyper holds none of its chunks.
const NOT_BLOCKED: u64 = u64::MAX;

/// `head_started_ms` when no request head is pending.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A connection that owes its first request head from `since` (when
    /// it was accepted, or its TLS handshake ended).
    pub(super) fn new(since: Instant) -> Activity {
        Activity {
            epoch: since,
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            // A new connection owes its first request head from the start.
            head_started_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            framing_conflict: AtomicBool::new(false),
            silent: AtomicBool::new(true),
            write_blocked_ms: AtomicU64::new(NOT_BLOCKED),
            stream_stalls: Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_millis()).unwrap_or(NO_HEAD - 1)
    }

    pub(super) fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NO_HEAD, Ordering::Relaxed);
        Active { activity: self.clone() }
    }

    /// Bytes arrived: if no request is in flight they start a request head.
    pub(super) fn saw_bytes(&self) {
        if self.active.load(Ordering::Relaxed) == 0 {
            if self.head_started_ms.load(Ordering::Relaxed) == NO_HEAD {
                self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
            }
            if self.silent.load(Ordering::Relaxed) {
                self.silent.store(false, Ordering::Relaxed);
            }
        }
    }

    /// When the pending request head (if any) runs out of time.
    pub(super) fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.h2.load(Ordering::Relaxed) || self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_started_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            ms => Some(self.epoch + Duration::from_millis(ms) + timeout),
        }
    }

    /// A write to the client found its socket full (`blocked`), or went
    /// through. Only a block reads the clock, and a write that goes through
    /// costs one load unless a block came before it.
    pub(super) fn wrote(&self, blocked: bool) {
        let since = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked && since == NOT_BLOCKED {
            self.write_blocked_ms.store(self.now_ms(), Ordering::Relaxed);
        } else if !blocked && since != NOT_BLOCKED {
            self.write_blocked_ms.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// When writes to a client that takes nothing run out of time.
    pub(super) fn write_deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.write_blocked_ms.load(Ordering::Relaxed) {
            NOT_BLOCKED => None,
            ms => Some(self.epoch + Duration::from_millis(ms) + timeout),
        }
    }

    /// HTTP/2: when the stream that has waited longest for the client to
    /// open its flow-control window (while the client may read everything
    /// else) runs out of time.
    pub(super) fn stream_stall_deadline(&self, timeout: Duration) -> Option<Instant> {
        if !self.h2.load(Ordering::Relaxed) {
            return None;
        }
        let stalls = self.stream_stalls.lock().unwrap_or_else(PoisonError::into_inner);
        let since = stalls.iter().filter_map(Weak::upgrade).map(|stall| stall.load(Ordering::Relaxed)).min();
        since.filter(|&ms| ms != NOT_BLOCKED).map(|ms| self.epoch + Duration::from_millis(ms) + timeout)
    }

    /// A stall clock for one HTTP/2 response stream, for the connection's
    /// timer to read; it stops counting when the stream's body is dropped.
    fn stream_stall_clock(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(NOT_BLOCKED));
        let mut stalls = self.stream_stalls.lock().unwrap_or_else(PoisonError::into_inner);
        if stalls.len() == stalls.capacity() {
            stalls.retain(|stall| stall.strong_count() > 0);
        }
        stalls.push(Arc::downgrade(&clock));
        clock
    }

    /// How long the connection has been idle, or `None` while busy.
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(Instant::now().saturating_duration_since(since))
    }

    /// When to look again: at the pending head's deadline, when an idle
    /// connection reaches the idle timeout (unless it is `closing`
    /// already: then there is nothing more to do for idleness, and a
    /// deadline already past would fire again at once), and at least every
    /// `header_timeout` while a head may start unseen.
    pub(super) fn next_check(
        &self,
        now: Instant,
        header_timeout: Duration,
        idle_timeout: Duration,
        closing: bool,
    ) -> Instant {
        let idle_check = match self.idle_for() {
            Some(idle) if !closing => now + idle_timeout.saturating_sub(idle),
            _ => now + idle_timeout,
        };
        let head_check = match self.head_deadline(header_timeout) {
            Some(deadline) => deadline,
            None if self.h2.load(Ordering::Relaxed) => idle_check,
            None => now + header_timeout,
        };
        idle_check.min(head_check)
    }
}

/// Why the watchdog closes a connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    /// Nothing arrived within `header_read_timeout` of accept.
    NoRequest,
    /// A request head started and did not complete within
    /// `header_read_timeout`: a slowloris, or a client gone quiet mid-head.
    HeadTooSlow,
    /// A response waited `send_timeout` on a client that takes none of it
    /// (a slow-read attack, or a client gone without closing): closing
    /// frees the connection and the upstream exchange it holds.
    ClientReadsNothing,
    /// Streams were still open `send_timeout` after a stalled stream's
    /// `GOAWAY`.
    StreamsOutlivedGoaway,
}

/// What a connection does when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Close now, without finishing anything.
    Close(Close),
    /// Keep serving, and look again at `next`.
    Continue {
        /// An HTTP/2 stream waited `send_timeout` for the client's window
        /// (counted as a send timeout).
        stream_stalled: bool,
        /// Start a graceful close (`Connection: close` or `GOAWAY`): the
        /// connection sat idle for `idle_timeout`, or a stream stalled.
        close_gracefully: bool,
        /// When to look again.
        next: Instant,
    },
}

/// The rules a connection's timer applies to its [`Activity`]: one timer
/// for every deadline, re-armed at the earliest.
#[derive(Debug)]
pub(super) struct Watchdog {
    limits: ConnLimits,
    /// Set when an HTTP/2 stream's stall sent the `GOAWAY`: the other
    /// streams may finish until then.
    hard_close: Option<Instant>,
}

impl Watchdog {
    /// A watchdog applying `limits`.
    pub(super) fn new(limits: ConnLimits) -> Watchdog {
        Watchdog { limits, hard_close: None }
    }

    /// What to do at `now`, for a connection doing what `activity` says;
    /// `closing` when it is already closing gracefully.
    pub(super) fn check(&mut self, activity: &Activity, now: Instant, closing: bool) -> Verdict {
        let ConnLimits { header_read_timeout, idle_timeout, send_timeout, .. } = self.limits;
        if activity.head_deadline(header_read_timeout).is_some_and(|d| d <= now) {
            let silent = activity.silent.load(Ordering::Relaxed);
            return Verdict::Close(if silent { Close::NoRequest } else { Close::HeadTooSlow });
        }
        if self.hard_close.is_some_and(|d| d <= now) {
            return Verdict::Close(Close::StreamsOutlivedGoaway);
        }
        let write_deadline = activity.write_deadline(send_timeout);
        if write_deadline.is_some_and(|d| d <= now) {
            return Verdict::Close(Close::ClientReadsNothing);
        }
        let mut closing = closing;
        let mut close_gracefully = false;
        let mut stream_stalled = false;
        // Once the GOAWAY is out, only the hard close is left to watch.
        let mut stall_deadline =
            if self.hard_close.is_none() { activity.stream_stall_deadline(send_timeout) } else { None };
        if stall_deadline.is_some_and(|d| d <= now) {
            // hyper cannot reset one stream, so the connection goes,
            // gracefully: a GOAWAY, and the other streams get one more
            // send_timeout to finish.
            stream_stalled = true;
            if !closing {
                closing = true;
                close_gracefully = true;
            }
            self.hard_close = Some(now + send_timeout);
            stall_deadline = None;
        }
        if !closing && activity.idle_for() >= Some(idle_timeout) {
            closing = true;
            close_gracefully = true;
        }
        let mut next = activity.next_check(now, header_read_timeout, idle_timeout, closing);
        for deadline in [write_deadline, stall_deadline, self.hard_close].into_iter().flatten() {
            next = next.min(deadline);
        }
        Verdict::Continue { stream_stalled, close_gracefully, next }
    }
}

/// One request counted as in flight on its connection.
#[derive(Debug)]
pub(super) struct Active {
    activity: Arc<Activity>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let a = &self.activity;
        let now = Instant::now().saturating_duration_since(a.epoch).as_millis();
        a.idle_since_ms.store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request being served, counted in its connection's activity until
    /// its response body ends. (A small future rather than an `async`
    /// block, which would hold the inner future twice.)
    pub(super) struct Tracked<F> {
        #[pin]
        handling: F,
        active: Option<Active>,
    }
}

impl<F> Tracked<F> {
    /// `handling`, counted as `active` until its response body ends.
    pub(super) fn new(handling: F, active: Active) -> Tracked<F> {
        Tracked { handling, active: Some(active) }
    }
}

impl<F: std::future::Future<Output = Response<ProxyBody>>> std::future::Future for Tracked<F> {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.handling.poll(cx));
        let active = this.active.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, active, stall: None })))
    }
}

/// The response body, holding its connection's activity count until it
/// ends. Over HTTP/2 it also clocks how long each chunk waits for the
/// client's flow-control window: hyper asks for the next chunk only once the
/// last one has gone into the stream's send buffer, which waits for window,
/// so the time from handing a chunk over until hyper comes back (or drops
/// the body) is time the client has given this stream no room.
#[derive(Debug)]
pub(super) struct TrackedBody {
    body: ProxyBody,
    /// `None` only if the future was polled after it was ready.
    active: Option<Active>,
    /// HTTP/2, once a chunk went out: when the chunk hyper holds was handed
    /// over (ms since the connection's epoch; [`NOT_BLOCKED`]: none held).
    stall: Option<Arc<AtomicU64>>,
}

impl TrackedBody {
    fn handed_over_chunk(&mut self) {
        let Some(active) = &self.active else { return };
        let activity = &active.activity;
        if !activity.h2.load(Ordering::Relaxed) {
            return;
        }
        let stall = self.stall.get_or_insert_with(|| activity.stream_stall_clock());
        stall.store(activity.now_ms(), Ordering::Relaxed);
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::pool::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(stall) = &this.stall {
            // hyper came back: the chunk before has found room.
            stall.store(NOT_BLOCKED, Ordering::Relaxed);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data()) {
            this.handed_over_chunk();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::{Activity, Close, Verdict, Watchdog};
    use crate::server::ConnLimits;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_fires_at_a_pending_heads_deadline_and_otherwise_looks_again() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let activity = Arc::new(Activity::new(Instant::now()));
        let start = Instant::now();
        // A new connection owes its first head from the start.
        assert_eq!(activity.next_check(start, header, idle, false), start + header);
        // A request in flight: no head deadline, look again after the idle
        // timeout at the latest, and every header_read_timeout for a head.
        let active = activity.begin();
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        assert_eq!(activity.next_check(now, header, idle, false), now + header);
        drop(active);
        // Idle, then a head starts 4 s later: the check lands on its deadline.
        tokio::time::advance(Duration::from_secs(4)).await;
        activity.saw_bytes();
        let head_started = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.next_check(Instant::now(), header, idle, false), head_started + header);
        // HTTP/2 has no head timer: only the idle check is left.
        let h2 = Arc::new(Activity::new(Instant::now()));
        h2.h2.store(true, Ordering::Relaxed);
        let _busy = h2.begin();
        let now = Instant::now();
        assert_eq!(h2.next_check(now, header, idle, false), now + idle);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_to_a_client_that_reads_nothing_run_out_of_time_from_the_first_block() {
        let send = Duration::from_secs(60);
        let activity = Activity::new(Instant::now());
        assert_eq!(activity.write_deadline(send), None, "nothing written yet");
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.wrote(false);
        assert_eq!(activity.write_deadline(send), None, "a write that went through");
        activity.wrote(true);
        let blocked = Instant::now();
        // Still blocked later: the deadline counts from the first block.
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.wrote(true);
        assert_eq!(activity.write_deadline(send), Some(blocked + send));
        // The client took some: a new block starts a new count.
        activity.wrote(false);
        assert_eq!(activity.write_deadline(send), None);
        activity.wrote(true);
        assert_eq!(activity.write_deadline(send), Some(Instant::now() + send));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_already_closing_is_not_checked_for_idleness_again_at_once() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        // HTTP/2, idle past its timeout, GOAWAY sent but the connection not
        // gone yet (a client that does not read): the idle deadline is in
        // the past, and re-arming the timer there would spin.
        let activity = Arc::new(Activity::new(Instant::now()));
        activity.h2.store(true, Ordering::Relaxed);
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(90)).await;
        let now = Instant::now();
        assert_eq!(activity.next_check(now, header, idle, false), now, "an idle connection is due now");
        assert!(activity.next_check(now, header, idle, true) > now, "a closing one is not due again at once");
    }

    fn limits() -> ConnLimits {
        ConnLimits {
            idle_timeout: Duration::from_secs(60),
            max_request_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_head_closes_the_connection_and_says_whether_anything_came() {
        let mut watchdog = Watchdog::new(limits());
        let silent = Activity::new(Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(watchdog.check(&silent, Instant::now(), false), Verdict::Close(Close::NoRequest));
        let slow = Activity::new(Instant::now());
        slow.saw_bytes();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(watchdog.check(&slow, Instant::now(), false), Verdict::Close(Close::HeadTooSlow));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_closed_at_its_write_deadline() {
        let mut watchdog = Watchdog::new(limits());
        let activity = Arc::new(Activity::new(Instant::now()));
        let _busy = activity.begin();
        activity.wrote(true);
        tokio::time::advance(Duration::from_secs(25)).await;
        let blocked_until = Instant::now() + Duration::from_secs(5);
        assert!(
            matches!(watchdog.check(&activity, Instant::now(), false), Verdict::Continue { next, .. } if next == blocked_until),
            "the next look is at the write deadline"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(watchdog.check(&activity, Instant::now(), false), Verdict::Close(Close::ClientReadsNothing));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_sends_goaway_and_the_rest_get_one_more_send_timeout() {
        let mut watchdog = Watchdog::new(limits());
        let activity = Arc::new(Activity::new(Instant::now()));
        activity.h2.store(true, Ordering::Relaxed);
        let _busy = activity.begin();
        let clock = activity.stream_stall_clock();
        clock.store(activity.now_ms(), Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(30)).await;
        let now = Instant::now();
        assert_eq!(
            watchdog.check(&activity, now, false),
            Verdict::Continue { stream_stalled: true, close_gracefully: true, next: now + Duration::from_secs(30) }
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(watchdog.check(&activity, Instant::now(), true), Verdict::Close(Close::StreamsOutlivedGoaway));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_gracefully_once() {
        let mut watchdog = Watchdog::new(limits());
        let activity = Arc::new(Activity::new(Instant::now()));
        activity.h2.store(true, Ordering::Relaxed);
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(60)).await;
        let verdict = watchdog.check(&activity, Instant::now(), false);
        assert!(
            matches!(verdict, Verdict::Continue { close_gracefully: true, stream_stalled: false, .. }),
            "{verdict:?}"
        );
        let verdict = watchdog.check(&activity, Instant::now(), true);
        assert!(matches!(verdict, Verdict::Continue { close_gracefully: false, .. }), "already closing: {verdict:?}");
    }
}
