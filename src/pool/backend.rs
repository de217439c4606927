//! One upstream backend: its identity, lifecycle and connections.
//!
//! A backend lives as long as some snapshot or in-flight request holds it.
//! Its lifecycle is `Active → Draining → gone` (as Sōzu's `Normal → Closing →
//! Closed`): a reload that drops it from the config calls
//! [`Backend::start_draining`], which makes it ineligible for new requests and
//! closes its idle upstream connections at once; requests already in flight
//! keep their connection and finish. When the last [`InFlight`] guard drops,
//! the draining backend is done and the watchers waiting on it wake.
//!
//! Connections are kept per backend (not in one shared, hashed pool): a
//! backend's idle list is a short `Vec` behind its own mutex, so checkout is a
//! pop and draining is a clear. A plain HTTP/1.1 backend has two: inline
//! connections for requests without a body (`super::h1`), hyper's for the
//! rest. Each list is last-in-first-out, so the
//! connections that stay idle are the oldest, at its front; a sweep every
//! few seconds (`crate::runtime`) ages them and closes those
//! idle for `upstream_idle_timeout`, without a clock read per request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::conn::{self, Conn, ConnectError, Cuttable, Timeouts, Transport, UpstreamConn};
use crate::config::BackendAddr;

/// Identity of a backend across reloads: pool name + address.
pub type BackendKey = (Arc<str>, BackendAddr);

/// Most idle connections kept per backend; more are closed when released.
const MAX_IDLE_PER_BACKEND: usize = 512;

/// A connection in a backend's idle list.
#[derive(Debug)]
struct Pooled {
    conn: Conn,
    /// How long it has been idle, as counted by the sweeps that saw it
    /// (an upper bound: the first sweep counts a whole period).
    idle_for: Duration,
    /// When the last request on it began.
    last_request: Instant,
}

/// Longest a checkout waits for a pooled hyper connection to take a new
/// request: far longer than its task takes to see the last response end,
/// far shorter than an upload a backend answered early.
const READY_WAIT: Duration = Duration::from_millis(20);

impl Pooled {
    fn new(conn: Conn, last_request: Instant) -> Pooled {
        Pooled { conn, idle_for: Duration::ZERO, last_request }
    }
}

/// Where a checked-out connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Opened for this request.
    New,
    /// The HTTP/2 connection every request to the backend shares.
    Shared,
    /// An HTTP/1.1 connection from the idle list, whose last request began
    /// at `last_request`.
    Pooled {
        /// When the connection's previous request began (it has been idle
        /// for at most the time since).
        last_request: Instant,
    },
}

impl Reuse {
    /// Whether the connection carried requests before: the backend may
    /// have closed it just now.
    pub fn is_reused(self) -> bool {
        self != Reuse::New
    }
}

/// An upstream backend.
#[derive(Debug)]
pub struct Backend {
    /// Name of the pool it belongs to.
    pub pool: Arc<str>,
    /// Its configured address.
    pub addr: BackendAddr,
    /// `authority` pre-parsed when it is an IP literal, to skip DNS.
    socket_addr: Option<std::net::SocketAddr>,
    /// Requests sent to it and not yet finished (response body included).
    in_flight: AtomicUsize,
    /// Set when the backend left the config.
    draining: AtomicBool,
    /// Cleared by active health checking.
    healthy: AtomicBool,
    /// Set while passive failure tracking has ejected it (`crate::health`).
    ejected: AtomicBool,
    /// Passive failure tracking counters, packed into one word so that
    /// recording a success costs one load: consecutive failures in the low
    /// 32 bits, consecutive ejections in the high 32 (`crate::health`).
    passive: AtomicU64,
    /// `[server] connect_timeout` and `request_timeout` of the latest config.
    timeouts: Mutex<Timeouts>,
    /// Idle keep-alive HTTP/1.1 connections, most recently used last; for
    /// HTTP/2, the one shared connection.
    idle: Mutex<Vec<Pooled>>,
    /// Idle inline HTTP/1.1 connections (plain-TCP backends only), kept
    /// apart so that requests with a body, which take hyper connections,
    /// never turn the inline ones into hyper ones.
    idle_inline: Mutex<Vec<Pooled>>,
    /// How the backend is reached.
    transport: Transport,
    /// Held while opening the shared HTTP/2 connection, so a burst of first
    /// requests opens one connection, not one each.
    h2_opening: tokio::sync::Mutex<()>,
    /// Woken whenever a request finishes, for drain waiters.
    finished: Notify,
    /// Raised when a drain times out: every connection to the backend closes.
    cut: watch::Sender<bool>,
    /// This backend's connections, as a cut closes them.
    connections: Mutex<Vec<Cuttable>>,
    /// In-flight requests cut that way.
    cut_requests: AtomicUsize,
    /// Pre-resolved metric handles, set once when the backend joins a proxy.
    metrics: std::sync::OnceLock<crate::metrics::BackendMetrics>,
    /// When its slow start began, if it is warming (`super::slow_start`).
    warm_up: super::slow_start::WarmUp,
}

impl Backend {
    /// A new, active, healthy backend with no connections, and the default
    /// `request_timeout`.
    pub fn new(pool: Arc<str>, addr: BackendAddr, connect_timeout: Duration) -> Backend {
        let timeouts = Timeouts { connect: connect_timeout, ..Timeouts::DEFAULT };
        Backend::with_transport(pool, addr, timeouts, Transport::plain())
    }

    /// A new backend reached over `transport`.
    pub fn with_transport(pool: Arc<str>, addr: BackendAddr, timeouts: Timeouts, transport: Transport) -> Backend {
        Backend {
            transport,
            h2_opening: tokio::sync::Mutex::new(()),
            pool,
            socket_addr: addr.authority.parse().ok(),
            addr,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            passive: AtomicU64::new(0),
            timeouts: Mutex::new(timeouts),
            idle: Mutex::new(Vec::new()),
            idle_inline: Mutex::new(Vec::new()),
            finished: Notify::new(),
            cut: watch::Sender::new(false),
            connections: Mutex::new(Vec::new()),
            cut_requests: AtomicUsize::new(0),
            metrics: std::sync::OnceLock::new(),
            warm_up: super::slow_start::WarmUp::warm(),
        }
    }

    /// Its slow-start state: a warm-up begins when it joins a running
    /// pool or becomes eligible again.
    pub fn warm_up(&self) -> &super::slow_start::WarmUp {
        &self.warm_up
    }

    /// Attach metric handles (the first call wins; a backend keeps its
    /// series across reloads).
    pub fn set_metrics(&self, metrics: crate::metrics::BackendMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The backend's metric handles, once attached.
    pub fn metrics(&self) -> Option<&crate::metrics::BackendMetrics> {
        self.metrics.get()
    }

    /// The identity that survives reloads.
    pub fn key(&self) -> BackendKey {
        (self.pool.clone(), self.addr.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the backend left the config.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether health checking currently considers it up.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Record the outcome of health checking.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.is_eligible();
        self.healthy.store(healthy, Ordering::Relaxed);
        self.warm_up_if_back(was);
    }

    /// Begin a warm-up if the backend just became eligible.
    fn warm_up_if_back(&self, was_eligible: bool) {
        if !was_eligible && self.is_eligible() {
            self.warm_up.start();
        }
    }

    /// Whether passive failure tracking has taken it out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Eject it from (or return it to) rotation; only `crate::health` calls this.
    pub fn set_ejected(&self, ejected: bool) {
        let was = self.is_eligible();
        self.ejected.store(ejected, Ordering::Relaxed);
        self.warm_up_if_back(was);
    }

    /// The packed passive-tracking counters; only `crate::health` reads or
    /// writes them, and owns their meaning.
    pub fn passive_counts(&self) -> &AtomicU64 {
        &self.passive
    }

    /// Whether a new request may be sent to it: healthy by the active
    /// checks and not passively ejected. Draining does not enter
    /// into it: a draining backend is absent from the current snapshot, so
    /// only a request that loaded the previous snapshot just before the
    /// reload can still pick it, and that request is as good as in flight —
    /// refusing it would turn a reload into a failed request.
    pub fn is_eligible(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// Apply the timeouts of a newly loaded config.
    pub fn set_timeouts(&self, timeouts: Timeouts) {
        if let Ok(mut t) = self.timeouts.lock() {
            *t = timeouts;
        }
    }

    /// Stop taking new requests and close idle connections at once.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // Dropping an inline connection closes its socket; dropping a
        // hyper sender lets its connection's task end, which does the same.
        for list in [&self.idle, &self.idle_inline] {
            let idle = list.lock().map(|mut idle| std::mem::take(&mut *idle));
            drop(idle);
        }
        self.finished.notify_waiters();
    }

    /// Wait until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.finished.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Close every connection to the backend now, failing what is still in
    /// flight (a drain that ran out of time). Returns how many requests were cut.
    pub fn cut_in_flight(&self) -> usize {
        let cut = self.in_flight();
        self.cut_requests.fetch_add(cut, Ordering::Relaxed);
        self.cut.send_replace(true);
        self.cut_connections();
        cut
    }

    fn cut_connections(&self) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.drain(..).for_each(|conn| conn.cut());
        }
    }

    /// Note a connection that a cut must close.
    fn track(&self, conn: Cuttable) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.retain(|conn| !conn.is_gone());
            connections.push(conn);
        }
        // Cut while this connection was opening: it must not outlive the cut.
        if *self.cut.borrow() {
            self.cut_connections();
        }
    }

    /// Open a new connection; it is closed if the backend is cut.
    async fn connect(&self) -> Result<Conn, ConnectError> {
        let timeouts = self.timeouts.lock().map(|t| *t).unwrap_or(Timeouts::DEFAULT);
        let (conn, cuttable) = conn::connect(&self.addr, self.socket_addr, timeouts, &self.transport).await?;
        self.track(cuttable);
        Ok(conn)
    }

    /// Hand an inline connection to hyper's client.
    async fn hand_to_hyper(&self, conn: Box<super::h1::H1Conn>) -> Result<UpstreamConn, ConnectError> {
        let (conn, cuttable) = conn::into_hyper(conn, &self.addr).await?;
        self.track(cuttable);
        Ok(conn)
    }

    /// A flag that turns true when the backend's drain times out.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }

    /// Requests cut by [`Backend::cut_in_flight`] so far.
    pub fn cut_requests(&self) -> usize {
        self.cut_requests.load(Ordering::Relaxed)
    }

    /// Count a request against this backend until the guard drops.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { backend: self.clone() }
    }

    /// A connection ready for a request: a pooled one if any is still
    /// usable (and `may_reuse`), else a new one; and where it came from. An
    /// HTTP/2 pool's shared connection is always reused. A request that
    /// can go `inline` (no body, no upgrade) to a plain HTTP/1.1 backend
    /// gets an inline connection; any other request a hyper one.
    pub async fn checkout(&self, may_reuse: bool, inline: bool) -> Result<(Conn, Reuse), ConnectError> {
        if self.transport.protocol == crate::config::UpstreamProtocol::H2 {
            let (conn, reuse) = Box::pin(self.checkout_shared()).await?;
            return Ok((Conn::Hyper(conn), reuse));
        }
        let inline = inline && self.transport.is_inline();
        let list = if inline { &self.idle_inline } else { &self.idle };
        // Each pooled connection is looked at once at most: a busy one goes
        // back under the others.
        let mut left = if may_reuse { list.lock().map_or(0, |idle| idle.len()) } else { 0 };
        while left > 0 {
            left -= 1;
            let pooled = list.lock().ok().and_then(|mut idle| idle.pop());
            let Some(Pooled { conn, last_request, idle_for }) = pooled else { break };
            let reuse = Reuse::Pooled { last_request };
            match conn {
                Conn::Inline(conn) if conn.is_usable() => return Ok((Conn::Inline(conn), reuse)),
                Conn::Inline(_) => continue,
                Conn::Hyper(conn) if conn.is_closed() => continue,
                // A connection is released when its response body ended;
                // the connection task may not have seen that yet, so wait
                // briefly. It may also still be sending the request's body,
                // which a backend that answered early (a 401 to an upload)
                // did not wait for: such a one is set aside for later
                // requests rather than waited on for the rest of the upload.
                Conn::Hyper(mut conn) => {
                    match conn.ready_now() {
                        Some(Ok(())) => return Ok((Conn::Hyper(conn), reuse)),
                        Some(Err(_)) => continue,
                        None => {}
                    }
                    // Boxed: the rare path, kept out of every request's future.
                    let waited = Box::pin(tokio::time::timeout(READY_WAIT, conn.ready())).await;
                    match waited {
                        Ok(Ok(())) => return Ok((Conn::Hyper(conn), reuse)),
                        Ok(Err(_)) => continue,
                        Err(_) => {
                            if let Ok(mut idle) = list.lock() {
                                idle.insert(0, Pooled { conn: Conn::Hyper(conn), idle_for, last_request });
                            }
                        }
                    }
                }
            }
        }
        // Boxed: the connect (TCP, TLS, handshake) is the cold path, and
        // inline it would make every request's future kilobytes larger.
        match Box::pin(self.connect()).await? {
            Conn::Inline(conn) if !inline => Ok((Conn::Hyper(Box::pin(self.hand_to_hyper(conn)).await?), Reuse::New)),
            conn => Ok((conn, Reuse::New)),
        }
    }

    /// HTTP/2: every request shares one connection, opened on first use
    /// and again whenever it has closed.
    async fn checkout_shared(&self) -> Result<(UpstreamConn, Reuse), ConnectError> {
        let shared = || {
            self.idle.lock().ok().and_then(|idle| match idle.first().map(|pooled| &pooled.conn) {
                Some(Conn::Hyper(UpstreamConn::H2(sender))) if !sender.is_closed() => Some(sender.clone()),
                _ => None,
            })
        };
        if let Some(sender) = shared() {
            return Ok((UpstreamConn::H2(sender), Reuse::Shared));
        }
        let _opening = self.h2_opening.lock().await;
        if let Some(sender) = shared() {
            return Ok((UpstreamConn::H2(sender), Reuse::Shared));
        }
        let conn = match self.connect().await? {
            Conn::Hyper(conn) => conn,
            // Never for an HTTP/2 backend (inline connections are
            // HTTP/1.1), but the match must say what it would do.
            Conn::Inline(conn) => self.hand_to_hyper(conn).await?,
        };
        if let UpstreamConn::H2(sender) = &conn {
            if let Ok(mut idle) = self.idle.lock() {
                *idle = vec![Pooled::new(Conn::Hyper(UpstreamConn::H2(sender.clone())), Instant::now())];
            }
        }
        Ok((conn, Reuse::New))
    }

    /// How the backend is reached.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Return a connection whose last response, to a request begun at
    /// `last_request`, was read to the end.
    pub fn release(&self, conn: Conn, last_request: Instant) {
        let list = match &conn {
            // The shared HTTP/2 connection never left the list.
            Conn::Hyper(UpstreamConn::H2(_)) => return,
            Conn::Hyper(conn) if conn.is_closed() => return,
            Conn::Hyper(_) => &self.idle,
            Conn::Inline(_) => &self.idle_inline,
        };
        if self.is_draining() {
            return;
        }
        if let Ok(mut idle) = list.lock() {
            if idle.len() < MAX_IDLE_PER_BACKEND {
                idle.push(Pooled::new(conn, last_request));
            }
        }
    }

    /// Count `elapsed` more idle time on every pooled HTTP/1.1 connection,
    /// and close those idle for `limit` or longer. Returns how many closed.
    /// The shared HTTP/2 connection is not aged: it carries every request
    /// to the backend, and hyper closes it when the backend goes away.
    pub fn close_idle(&self, elapsed: Duration, limit: Duration) -> usize {
        close_idle_in(&self.idle, elapsed, limit) + close_idle_in(&self.idle_inline, elapsed, limit)
    }
}

/// [`Backend::close_idle`] for one idle list.
fn close_idle_in(list: &Mutex<Vec<Pooled>>, elapsed: Duration, limit: Duration) -> usize {
    let Ok(mut idle) = list.lock() else { return 0 };
    let before = idle.len();
    // Dropping an inline connection closes its socket; dropping a sender
    // ends its connection task, which does the same.
    idle.retain_mut(|pooled| {
        if matches!(pooled.conn, Conn::Hyper(UpstreamConn::H2(_))) {
            return true;
        }
        // One whole sweep period idle: its buffers go back, so that the
        // connections a burst left behind cost their sockets only, while
        // one reused request after request keeps them.
        if pooled.idle_for > Duration::ZERO {
            if let Conn::Inline(conn) = &mut pooled.conn {
                conn.release_idle_buffers();
            }
        }
        pooled.idle_for = pooled.idle_for.saturating_add(elapsed);
        pooled.idle_for < limit
    });
    before - idle.len()
}

/// Counts one request as in flight on a backend while it lives.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// The backend this request is counted on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.backend.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 && self.backend.is_draining() {
            self.backend.finished.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::h1::{CutSwitch, H1Conn};

    fn buffer_capacity(list: &Mutex<Vec<Pooled>>) -> usize {
        match &list.lock().unwrap()[0].conn {
            Conn::Inline(conn) => conn.buffer_capacity(),
            Conn::Hyper(_) => unreachable!("only inline connections here"),
        }
    }

    /// A connection a sweep finds just returned keeps its buffers (it may
    /// be in use again at once); one the sweep before saw idle already
    /// gives them back, and stays pooled.
    #[tokio::test]
    async fn an_inline_connection_idle_for_a_sweep_period_drops_its_buffers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let conn = H1Conn::new(stream, Arc::new(CutSwitch::default())).with_buffers();
        let list = Mutex::new(vec![Pooled::new(Conn::Inline(Box::new(conn)), Instant::now())]);
        let (period, limit) = (Duration::from_secs(10), Duration::from_secs(60));
        let held = buffer_capacity(&list);
        assert!(held >= 8 * 1024, "the test connection holds {held} bytes");
        assert_eq!(close_idle_in(&list, period, limit), 0);
        assert_eq!(buffer_capacity(&list), held, "the first sweep released a connection just returned");
        assert_eq!(close_idle_in(&list, period, limit), 0);
        assert_eq!(buffer_capacity(&list), 0, "a connection idle for a whole period kept its buffers");
        assert_eq!(list.lock().unwrap().len(), 1, "the connection must stay pooled");
    }
}
