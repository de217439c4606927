//! One request's exchange with one backend, recorded once when it ends.
//!
//! An [`Exchange`] is created when a backend is chosen and travels with the
//! request — into the response body when the backend answers — until the
//! last byte has passed or the request is abandoned. Its `Drop` is the one
//! place that records the outcome: the in-flight count, the status class
//! counter, the latency histogram, the pool's guard window, the tallies of
//! the guards that judge other pools against this one, and the backend's
//! passive health. A backend warming up under slow start beside warm ones
//! ([`crate::pool::Pool::in_warm_up`]) is counted in its own metrics and
//! passive health but not in any guard: its cold start is not the version's. Recording in `Drop` (as tower's load trackers do) means a
//! cancelled request — the client hung up — is still counted, with its
//! latency, but never as a backend failure.

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::time::Instant;

use crate::access_log::Pending;
pub use crate::guard::BreachSender;
use crate::guard::PoolGuard;
use crate::health::PassiveOutcome;
use crate::pool::backend::InFlight;
use crate::pool::{Backend, UpstreamFailure};

/// How the exchange ended, as far as the backend is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No answer yet (if it stays so, the client gave up).
    Pending,
    /// The backend answered with this status.
    Status(u16),
    /// A gRPC answer (HTTP `200`) whose `grpc-status` is still to come, in
    /// its trailers. If the body never ends (the client went away), the
    /// call counts as the `200` it was.
    GrpcAwaiting,
    /// A gRPC answer with this `grpc-status`.
    Grpc(u8),
    /// The backend failed.
    Failed(UpstreamFailure),
}

/// What is recorded when an exchange ends.
#[derive(Debug, Clone)]
pub struct Recorders {
    /// The pool's guard, if it has one.
    pub guard: Option<Arc<PoolGuard>>,
    /// `cutover_requests_total` for this route, pool and backend, by class.
    pub codes: Option<Arc<[IntCounter; 5]>>,
    /// The pool, for passive health tracking (which never ejects more than
    /// a share of it).
    pub pool: Option<Arc<crate::pool::Pool>>,
}

/// A request in flight on one backend.
#[derive(Debug)]
pub struct Exchange {
    in_flight: InFlight,
    started: Instant,
    outcome: Outcome,
    recorders: Recorders,
    /// Set when the request moved to another backend: record nothing more.
    abandoned: bool,
    /// The request's access-log record, when it is logged.
    log: Option<Box<Pending>>,
}

impl Exchange {
    /// Start counting a request on `backend`, begun at `started`.
    pub fn begin(backend: &Arc<Backend>, started: Instant, recorders: Recorders) -> Exchange {
        Exchange {
            in_flight: backend.begin_request(),
            started,
            outcome: Outcome::Pending,
            recorders,
            abandoned: false,
            log: None,
        }
    }

    /// When the request began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        self.in_flight.backend()
    }

    /// The backend answered with `status` (its body may still be streaming).
    pub fn answered(&mut self, status: u16) {
        self.outcome = Outcome::Status(status);
        if let Some(log) = &mut self.log {
            log.answered(status);
        }
    }

    /// The backend's `200` is a gRPC answer (see [`crate::grpc`]): it is
    /// judged by the `grpc-status` of `head` (a trailers-only answer), or
    /// of the trailers still to come.
    pub fn answered_grpc(&mut self, head: &http::HeaderMap) {
        self.outcome = match crate::grpc::status(head) {
            Some(code) => Outcome::Grpc(code),
            None => Outcome::GrpcAwaiting,
        };
    }

    /// The answer's body ended, with `trailers` if it had any: a gRPC
    /// answer still waiting for its `grpc-status` takes it from them, and
    /// one that ends without any is `UNKNOWN`, as its client sees it.
    pub fn body_ended(&mut self, trailers: Option<&http::HeaderMap>) {
        if self.outcome == Outcome::GrpcAwaiting {
            let code = trailers.and_then(crate::grpc::status).unwrap_or(crate::grpc::UNKNOWN);
            self.outcome = Outcome::Grpc(code);
        }
    }

    /// `bytes` more of the answer's body went to the client.
    pub fn wrote(&mut self, bytes: usize) {
        if let Some(log) = &mut self.log {
            log.wrote(bytes as u64);
        }
    }

    /// Log the request with `pending` when the exchange ends.
    pub fn set_log(&mut self, pending: Box<Pending>) {
        self.log = Some(pending);
    }

    /// The request's record, when it is logged.
    pub fn log_mut(&mut self) -> Option<&mut Pending> {
        self.log.as_deref_mut()
    }

    /// The request moves on to `next` (another backend): so does its record.
    pub fn pass_log(&mut self, next: &mut Exchange) {
        next.log = self.log.take();
    }

    /// The client failed mid-exchange (hung up, stalled its upload): not
    /// the backend's fault, so recorded like a cancelled request.
    pub fn client_failed(&mut self) {
        self.outcome = Outcome::Pending;
    }

    /// The backend failed.
    pub fn failed(&mut self, kind: UpstreamFailure) {
        self.outcome = Outcome::Failed(kind);
    }

    /// The request moves to another backend after this one failed it:
    /// count the failure against this backend, but not the request against
    /// the pool's guard or status counters — the request itself goes on.
    pub fn abandon_for_retry(mut self, kind: UpstreamFailure) {
        if let Some(m) = self.backend().metrics() {
            m.failures[kind.index()].inc();
        }
        self.report_passive(kind.into());
        self.abandoned = true;
    }

    /// The request moves to another backend through no fault of this one:
    /// record nothing.
    pub fn abandon(mut self) {
        self.abandoned = true;
    }
}

/// The class a failing gRPC call is counted in: `5xx`, with the failures.
const GRPC_FAILED: u16 = 500;

impl Exchange {
    fn report_passive(&self, outcome: PassiveOutcome) {
        if let Some(pool) = &self.recorders.pool {
            crate::health::record_outcome(self.backend(), &pool.backends, outcome);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.abandoned {
            return;
        }
        if let Some(log) = self.log.take() {
            let (status, failure) = match self.outcome {
                // Nobody answered: the client went away (nginx's 499).
                Outcome::Pending => (499, None),
                Outcome::Status(status) => (status, None),
                Outcome::GrpcAwaiting | Outcome::Grpc(_) => (200, None),
                // The proxy's own answer to a failed backend (see `ProxyError::status`).
                Outcome::Failed(UpstreamFailure::Timeout) => (504, Some(UpstreamFailure::Timeout.as_str())),
                Outcome::Failed(kind) => (502, Some(kind.as_str())),
            };
            log.finish(&self.backend().addr.authority, status, failure);
        }
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        let backend = self.in_flight.backend();
        let metrics = backend.metrics();
        let grpc_failures = self.recorders.pool.as_ref().map_or(crate::grpc::GrpcCodes::SERVER, |p| p.grpc_failures);
        let outcome = match self.outcome {
            // The body stopped before the trailers: the call is as good as
            // its `200` so far (the client hung up).
            Outcome::GrpcAwaiting => Outcome::Status(200),
            // A failing gRPC call counts where a 5xx does, so the failure
            // series of `cutover_requests_total` and passive health see it.
            Outcome::Grpc(code) if grpc_failures.contains(code) => Outcome::Status(GRPC_FAILED),
            Outcome::Grpc(_) => Outcome::Status(200),
            other => other,
        };
        let failed = match outcome {
            Outcome::Pending | Outcome::GrpcAwaiting | Outcome::Grpc(_) => false,
            Outcome::Status(status) => {
                if let Some(codes) = &self.recorders.codes {
                    let class = usize::from(status / 100).clamp(1, 5) - 1;
                    codes[class].inc();
                }
                status >= 500
            }
            Outcome::Failed(kind) => {
                if let Some(codes) = &self.recorders.codes {
                    // The client got the proxy's 502/504.
                    codes[4].inc();
                }
                if let Some(m) = metrics {
                    m.failures[kind.index()].inc();
                }
                true
            }
        };
        if let Some(m) = metrics {
            m.duration.observe(latency.as_secs_f64());
        }
        let passive = match outcome {
            Outcome::Pending | Outcome::GrpcAwaiting | Outcome::Grpc(_) => None,
            Outcome::Status(s) if s >= 500 => Some(PassiveOutcome::ServerError),
            Outcome::Status(_) => Some(PassiveOutcome::Success),
            Outcome::Failed(kind) => Some(kind.into()),
        };
        if let Some(outcome) = passive {
            self.report_passive(outcome);
        }
        // A warm-up beside warm backends of the same version is the
        // backend's, not the version's: counted above, judged nowhere.
        let pool = self.recorders.pool.as_ref();
        if pool.is_some_and(|pool| pool.in_warm_up(backend, now)) {
            if let Some(guard) = &self.recorders.guard {
                guard.exclude_warming();
            }
            return;
        }
        if let Some(guard) = &self.recorders.guard {
            guard.observe(now, failed, latency);
        }
        if let Some(pool) = pool {
            for tally in &pool.baseline_for {
                tally.record(failed, latency);
            }
        }
    }
}
