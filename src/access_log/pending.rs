//! A record under way: built when a request is known to be logged, filled
//! in as the request goes (retries, the answer's head, body bytes) and
//! handed to the log when the request's exchange ends.
//!
//! It travels boxed inside the request's exchange, so a request that is not
//! logged carries one null pointer and allocates nothing for the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::record::{Kind, Record};
use super::sink::AccessLog;

/// A record being filled in.
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    record: Record<'static>,
    /// When the request's head arrived, on the clock its exchange uses.
    started: Instant,
    /// When the request was last sent upstream.
    sent: Option<Instant>,
    /// The status the client got, when the proxy answered itself.
    status: Option<u16>,
    /// Sampling left the request out: it is logged only if it fails.
    failures_only: bool,
    /// The request body's bytes read from the client so far, added up by
    /// the body as it streams (see `RequestBody::count_into`).
    body_read: Option<Arc<AtomicU64>>,
}

impl Pending {
    /// A record for `log`, of a request begun at `started`; with
    /// `failures_only`, it is written only if the request fails.
    pub fn new(log: Arc<AccessLog>, record: Record<'static>, started: Instant, failures_only: bool) -> Box<Pending> {
        Box::new(Pending { log, record, started, sent: None, status: None, failures_only, body_read: None })
    }

    /// A counter for the request body's bytes as they are read, to be
    /// handed to the body: its total is the line's `bytes_in`.
    pub fn count_body(&mut self) -> Arc<AtomicU64> {
        self.body_read.get_or_insert_with(Arc::default).clone()
    }

    /// Sampling left the request out, but it failed: log it after all.
    pub fn keep(&mut self) {
        self.failures_only = false;
    }

    /// The request goes upstream now.
    pub fn sending(&mut self) {
        self.sent = Some(Instant::now());
    }

    /// The backend's answer head arrived now, with `status`.
    pub fn answered(&mut self, status: u16) {
        self.record.status = status;
        if let Some(sent) = self.sent {
            self.record.upstream_ttfb = Some(Instant::now().saturating_duration_since(sent));
        }
    }

    /// The request goes again.
    pub fn retried(&mut self) {
        self.record.retries += 1;
    }

    /// `bytes` more of the answer's body reached the client.
    pub fn wrote(&mut self, bytes: u64) {
        self.record.bytes_out += bytes;
    }

    /// The proxy answered the client itself, with `status`.
    pub fn answered_by_proxy(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// An upgraded connection closed after carrying `up` bytes from the
    /// client and `down` bytes to it.
    pub fn tunnel_closed(&mut self, up: u64, down: u64) {
        self.record.kind = Kind::Tunnel;
        self.record.bytes_in = up;
        self.record.bytes_out = down;
    }

    /// The request ended: served by `backend` (`host:port`), with `failure`
    /// if the backend failed it. The status logged is the one the client
    /// got: the proxy's own answer, else the backend's (even when its body
    /// broke later), else `status`. Hands the line to the writer.
    pub fn finish(self: Box<Self>, backend: &str, status: u16, failure: Option<&'static str>) {
        let Pending { log, record, started, status: own, failures_only, body_read, .. } = *self;
        // The record outlives nothing here: it borrows the backend's name
        // for the moment its line is made.
        let mut record: Record<'_> = record;
        record.backend = Some(backend);
        if let (Kind::Request, Some(read)) = (record.kind, body_read) {
            record.bytes_in = read.load(Ordering::Relaxed);
        }
        let answered = (record.status != 0).then_some(record.status);
        record.status = own.or(answered).unwrap_or(status);
        record.failure = failure;
        if failures_only && !record.failed() {
            return;
        }
        record.ended(started);
        log.log(&record);
    }
}
