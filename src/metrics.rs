//! Every metric cutover exports, declared once (SPEC §5).
//!
//! Names and label sets are fixed here and nowhere else. Label values come
//! from the config only (route, pool and backend names, status classes),
//! never from requests, so cardinality is bounded by the config. The request
//! path never formats a label or looks one up: counters and histograms are
//! resolved into handles when a snapshot or backend is built, and gauges
//! that mirror state (in flight, healthy, draining, weights, trips) are set
//! from that state when `/metrics` is scraped.
//!
//! Each proxy owns its own [`Registry`], so several proxies in one process
//! (as in the tests) never share counts.

mod gauges;

pub use gauges::{BackendGauges, StateGauges};

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The fleet's gauges ([`Metrics::fleet_gauges`]).
#[derive(Debug, Clone)]
pub struct FleetGauges {
    /// `cutover_fleet_connected`.
    pub connected: IntGauge,
    /// `cutover_fleet_leader`.
    pub leader: IntGauge,
}

/// The metric families of one proxy.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// `cutover_requests_total{route,pool,backend,code}`.
    pub requests: IntCounterVec,
    /// `cutover_upstream_failures_total{pool,backend,kind}`.
    pub upstream_failures: IntCounterVec,
    /// `cutover_request_duration_seconds{pool,backend}`.
    pub request_duration: HistogramVec,
    /// `cutover_in_flight_requests{pool,backend}`.
    pub in_flight: IntGaugeVec,
    /// `cutover_pool_weight{route,pool}`.
    pub pool_weight: IntGaugeVec,
    /// `cutover_pool_tripped{pool}`.
    pub pool_tripped: IntGaugeVec,
    /// `cutover_rollbacks_total{pool,reason}`.
    pub rollbacks: IntCounterVec,
    /// `cutover_guard_breaches_total{pool,reason}`.
    pub guard_breaches: IntCounterVec,
    /// `cutover_drain_cut_requests_total{pool,backend}`.
    pub drain_cut: IntCounterVec,
    /// `cutover_backend_healthy{pool,backend}`.
    pub backend_healthy: IntGaugeVec,
    /// `cutover_backend_draining{pool,backend}`.
    pub backend_draining: IntGaugeVec,
    /// `cutover_backend_weight_factor{pool,backend}`.
    pub backend_weight_factor: GaugeVec,
    /// `cutover_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `cutover_config_revision`.
    pub config_revision: IntGauge,
    /// `cutover_client_timeouts_total{timeout}`.
    pub client_timeouts: IntCounterVec,
    /// `cutover_request_headers_dropped_total{reason}`.
    pub request_headers_dropped: IntCounterVec,
    /// `cutover_upstream_retries_total{pool,reason}`.
    pub upstream_retries: IntCounterVec,
    /// `cutover_guard_verdict{pool,verdict}`.
    pub guard_verdict: IntGaugeVec,
    /// `cutover_guard_superseded_breaches_total{pool}`.
    pub superseded_breaches: IntCounterVec,
    /// `cutover_guard_warming_excluded_total{pool}`: outcomes of backends
    /// warming up under slow start that the pool's guard left out.
    pub guard_warming_excluded: IntCounterVec,
    /// `cutover_rollout_step{route}`: the rollout's current step, 1-based (0 before the first).
    pub rollout_step: IntGaugeVec,
    /// `cutover_rollout_weight{route}`: the canary's share in percent while the rollout sets it.
    pub rollout_weight: IntGaugeVec,
    /// `cutover_rollout_state{route,state}`: 1 for the rollout's state, 0 for the others.
    pub rollout_state: IntGaugeVec,
    /// `cutover_rollout_aborts_total{route,reason}`: failing, operator, switchback or bake.
    pub rollout_aborts: IntCounterVec,
    /// `cutover_access_log_dropped_total`.
    pub access_log_dropped: IntCounter,
    /// `cutover_client_connections_parked`.
    pub client_connections_parked: IntGauge,
    /// `cutover_mirror_requests_total{route,result}`.
    pub mirror_requests: IntCounterVec,
}

/// A guard's verdicts, as the `verdict` label of `cutover_guard_verdict`.
pub const VERDICTS: [&str; 3] = ["healthy", "inconclusive", "failing"];

/// `cutover_mirror_requests_total`'s results, in the order of
/// [`Metrics::mirror_requests`]' handles.
pub const MIRROR_RESULTS: [&str; 4] = ["sent", "dropped", "too_large", "failed"];

/// Why a request went to a backend again, as the `reason` label of
/// `cutover_upstream_retries_total`.
pub const RETRY_REASONS: [&str; 3] = ["connect", "unprocessed", "closed_unanswered"];

/// The protective client timeouts, as the `timeout` label.
pub const CLIENT_TIMEOUTS: [&str; 5] = ["no_request", "header_read", "body_read", "send", "tls_handshake"];

/// Handles for `cutover_client_timeouts_total`, one per timeout, resolved
/// once: each fires only when a client is cut off.
#[derive(Debug, Clone)]
pub struct ClientTimeouts {
    /// A connection that sent no byte of a request within
    /// `header_read_timeout`: a browser's unused preconnect, a port scan.
    /// Apart from `header_read`, so that one is not drowned by them.
    pub no_request: IntCounter,
    /// A request head begun and not complete within `header_read_timeout`.
    pub header_read: IntCounter,
    /// A request body silent for `body_read_timeout` (the `408`).
    pub body_read: IntCounter,
    /// A response the client took nothing of for `send_timeout`.
    pub send: IntCounter,
    /// A TLS handshake not done within its 10 s.
    pub tls_handshake: IntCounter,
}

/// Status classes, as the `code` label: index = first digit - 1.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Per-backend handles the request path uses, resolved once.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Time to the response's last byte.
    pub duration: Histogram,
    /// Failures by kind: connect, timeout, reset, protocol.
    pub failures: [IntCounter; 4],
    /// The pool's requests sent again, by [`RETRY_REASONS`].
    pub retries: [IntCounter; 3],
}

impl Metrics {
    /// `cutover_fleet_connected` and `cutover_fleet_leader`, registered on
    /// first call: only a replica with `[fleet]` exports them, so a proxy
    /// alone never looks like a disconnected replica.
    pub fn fleet_gauges(&self) -> FleetGauges {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            if let Err(e) = self.registry.register(Box::new(gauge.clone())) {
                tracing::warn!(error = %e, name, "fleet gauge already registered");
            }
            gauge
        };
        FleetGauges {
            connected: gauge(
                "cutover_fleet_connected",
                "1 while this replica is in step with the fleet's etcd; 0 while it serves fail static.",
            ),
            leader: gauge(
                "cutover_fleet_leader",
                "1 while this replica leads the fleet (makes the automatic decisions).",
            ),
        }
    }

    /// Declare every family in a new registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        // 1 ms to ~16 s, doubling: latency SLOs live in this range.
        let buckets = exponential_buckets(0.001, 2.0, 15).expect("valid buckets");
        let request_duration = HistogramVec::new(
            HistogramOpts::new("cutover_request_duration_seconds", "Time from request to the response's last byte.")
                .buckets(buckets),
            &["pool", "backend"],
        )
        .expect("valid metric");
        registry.register(Box::new(request_duration.clone())).expect("metric registered once");
        let config_revision =
            IntGauge::new("cutover_config_revision", "Revision of the effective routing state.").expect("valid metric");
        registry.register(Box::new(config_revision.clone())).expect("metric registered once");
        let access_log_dropped = IntCounter::new(
            "cutover_access_log_dropped_total",
            "Access log lines dropped because the destination could not keep up.",
        )
        .expect("valid metric");
        registry.register(Box::new(access_log_dropped.clone())).expect("metric registered once");
        let client_connections_parked = IntGauge::new(
            "cutover_client_connections_parked",
            "Idle HTTP/1.1 client connections parked: kept open with hyper's state freed until the client sends again.",
        )
        .expect("valid metric");
        registry.register(Box::new(client_connections_parked.clone())).expect("metric registered once");

        let backend_weight_factor = GaugeVec::new(
            Opts::new(
                "cutover_backend_weight_factor",
                "Share factor of a backend: below 1 while it ramps up in slow start, 1 otherwise.",
            ),
            &["pool", "backend"],
        )
        .expect("valid metric");
        registry.register(Box::new(backend_weight_factor.clone())).expect("metric registered once");

        let metrics = Metrics {
            requests: counter(
                "cutover_requests_total",
                "Requests answered, by route, pool, backend and status class.",
                &["route", "pool", "backend", "code"],
            ),
            upstream_failures: counter(
                "cutover_upstream_failures_total",
                "Upstream exchanges that failed, by kind.",
                &["pool", "backend", "kind"],
            ),
            request_duration,
            in_flight: gauge("cutover_in_flight_requests", "Requests in flight.", &["pool", "backend"]),
            pool_weight: gauge("cutover_pool_weight", "Effective weight of a pool in a route.", &["route", "pool"]),
            pool_tripped: gauge("cutover_pool_tripped", "1 while the pool is tripped (rolled back).", &["pool"]),
            rollbacks: counter("cutover_rollbacks_total", "Pools rolled back, by reason.", &["pool", "reason"]),
            guard_breaches: counter(
                "cutover_guard_breaches_total",
                "Guard thresholds breached, tripped or not.",
                &["pool", "reason"],
            ),
            drain_cut: counter(
                "cutover_drain_cut_requests_total",
                "In-flight requests cut when drain_timeout ran out.",
                &["pool", "backend"],
            ),
            backend_healthy: gauge(
                "cutover_backend_healthy",
                "1 while the backend takes traffic: active checks pass and passive tracking has not ejected it.",
                &["pool", "backend"],
            ),
            backend_draining: gauge(
                "cutover_backend_draining",
                "1 while a removed backend finishes its requests.",
                &["pool", "backend"],
            ),
            backend_weight_factor,
            config_reloads: counter("cutover_config_reloads_total", "Config reload attempts, by result.", &["result"]),
            config_revision,
            client_timeouts: counter(
                "cutover_client_timeouts_total",
                "Clients cut off by a protective timeout: no_request, header_read, body_read, send or tls_handshake.",
                &["timeout"],
            ),
            request_headers_dropped: counter(
                "cutover_request_headers_dropped_total",
                "Request headers not forwarded to the backend, by reason (underscore: a name containing `_`).",
                &["reason"],
            ),
            upstream_retries: counter(
                "cutover_upstream_retries_total",
                "Requests sent to a backend again: after a failed connect, a stream the backend did not process, or a connection closed before any answer.",
                &["pool", "reason"],
            ),
            guard_verdict: gauge(
                "cutover_guard_verdict",
                "1 for a guarded pool's current verdict (healthy, inconclusive, failing), 0 for the others.",
                &["pool", "verdict"],
            ),
            superseded_breaches: counter(
                "cutover_guard_superseded_breaches_total",
                "Breaches of the guard of a version the config has replaced (requests still in flight to its backends): ignored.",
                &["pool"],
            ),
            guard_warming_excluded: counter(
                "cutover_guard_warming_excluded_total",
                "Outcomes of backends warming up under slow start beside warm ones, left out of the pool's guard and verdict.",
                &["pool"],
            ),
            rollout_step: gauge("cutover_rollout_step", "Current step of the route's rollout, 1-based.", &["route"]),
            rollout_weight: gauge(
                "cutover_rollout_weight",
                "Canary share of the route in percent while its rollout sets it.",
                &["route"],
            ),
            rollout_state: gauge(
                "cutover_rollout_state",
                "1 for the state the route's rollout is in (idle, progressing, paused, aborted, promoted).",
                &["route", "state"],
            ),
            rollout_aborts: counter(
                "cutover_rollout_aborts_total",
                "Rollouts aborted, by reason: failing, operator, switchback or bake.",
                &["route", "reason"],
            ),
            access_log_dropped,
            client_connections_parked,
            mirror_requests: counter(
                "cutover_mirror_requests_total",
                "Copies of requests for a route's shadow pool: sent (the shadow answered), dropped (too many in flight), too_large (body over max_body) or failed (no answer).",
                &["route", "result"],
            ),
            registry,
        };
        // Counters exist at 0 from the start, so `increase()` sees the first event.
        for result in ["ok", "error"] {
            let _ = metrics.config_reloads.with_label_values(&[result]);
        }
        for timeout in CLIENT_TIMEOUTS {
            let _ = metrics.client_timeouts.with_label_values(&[timeout]);
        }
        let _ = metrics.underscore_headers_dropped();
        metrics
    }

    /// `cutover_client_timeouts_total` handles.
    pub fn client_timeouts(&self) -> ClientTimeouts {
        let [no_request, header_read, body_read, send, tls_handshake] =
            CLIENT_TIMEOUTS.map(|timeout| self.client_timeouts.with_label_values(&[timeout]));
        ClientTimeouts { no_request, header_read, body_read, send, tls_handshake }
    }

    /// `cutover_request_headers_dropped_total{reason="underscore"}`.
    pub fn underscore_headers_dropped(&self) -> IntCounter {
        self.request_headers_dropped.with_label_values(&["underscore"])
    }

    /// Handles for one backend.
    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        let kind = |k: &str| self.upstream_failures.with_label_values(&[pool, backend, k]);
        // Create the series at 0 so dashboards and alerts see it before the first cut.
        let _ = self.drain_cut.with_label_values(&[pool, backend]);
        BackendMetrics {
            duration: self.request_duration.with_label_values(&[pool, backend]),
            failures: [kind("connect"), kind("timeout"), kind("reset"), kind("protocol")],
            retries: RETRY_REASONS.map(|reason| self.upstream_retries.with_label_values(&[pool, reason])),
        }
    }

    /// `cutover_mirror_requests_total` handles for `route`, by result
    /// ([`MIRROR_RESULTS`]), created at 0.
    pub fn mirror_requests(&self, route: &str) -> [IntCounter; 4] {
        MIRROR_RESULTS.map(|result| self.mirror_requests.with_label_values(&[route, result]))
    }

    /// `cutover_requests_total` handles for a (route, pool, backend), by class.
    pub fn request_codes(&self, route: &str, pool: &str, backend: &str) -> [IntCounter; 5] {
        CODE_CLASSES.map(|code| self.requests.with_label_values(&[route, pool, backend, code]))
    }

    /// Create a pool's rollback and breach series at 0, so alerts on
    /// `increase()` fire on the first trip.
    pub fn touch_pool(&self, pool: &str, guarded: bool) {
        let _ = self.rollbacks.with_label_values(&[pool, "manual"]);
        if guarded {
            for reason in ["error_rate", "latency", "error_increase", "latency_ratio"] {
                let _ = self.rollbacks.with_label_values(&[pool, reason]);
                let _ = self.guard_breaches.with_label_values(&[pool, reason]);
            }
        }
    }

    /// Forget the gauges of a backend that is gone, so dashboards do not
    /// show it as present forever. Its counters stay: removing a counter
    /// right after its last increase would hide that increase from a
    /// scraper that has not seen it yet.
    pub fn forget_backend(&self, pool: &str, backend: &str) {
        let _ = self.in_flight.remove_label_values(&[pool, backend]);
        let _ = self.backend_healthy.remove_label_values(&[pool, backend]);
        let _ = self.backend_draining.remove_label_values(&[pool, backend]);
        let _ = self.backend_weight_factor.remove_label_values(&[pool, backend]);
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
