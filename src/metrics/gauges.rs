//! The gauges that mirror state: weights, trips, guard verdicts, and each
//! backend's in-flight, healthy, draining and slow-start figures.
//!
//! They are set from the state when `/metrics` is scraped, never from the
//! request path. The caller describes the state in plain figures
//! ([`StateGauges`]), so the metrics stay below the snapshot and the control
//! plane that own that state. Gauges mirror the current state only: a pool
//! or route deleted from the config disappears from them.

use super::{Metrics, VERDICTS};

/// The state the gauges show, as plain figures.
#[derive(Debug, Default)]
pub struct StateGauges {
    /// Every pool of the config, and whether it has a guard.
    pub guarded: Vec<(String, bool)>,
    /// Each route's effective weight for each of its pools: (route, pool, weight).
    pub weights: Vec<(String, String, u32)>,
    /// Every pool serving, and whether it is tripped.
    pub tripped: Vec<(String, bool)>,
    /// The backends serving, then the backends draining.
    pub backends: Vec<BackendGauges>,
    /// Every guarded pool's verdict (`healthy`, `inconclusive`, `failing`).
    pub verdicts: Vec<(String, &'static str)>,
}

/// One backend's figures.
#[derive(Debug)]
pub struct BackendGauges {
    /// Its pool.
    pub pool: String,
    /// Its address, as the `backend` label.
    pub addr: String,
    /// Requests in flight.
    pub in_flight: usize,
    /// Healthy and not ejected (not shown for a draining backend).
    pub healthy: bool,
    /// Removed from the config, finishing its requests.
    pub draining: bool,
    /// Its share factor: below 1 while it ramps up in slow start.
    pub weight_factor: f64,
}

impl Metrics {
    /// Set the gauges that mirror state to `state`.
    pub fn show_state(&self, state: &StateGauges) {
        self.pool_weight.reset();
        self.pool_tripped.reset();
        for (pool, guarded) in &state.guarded {
            self.touch_pool(pool, *guarded);
        }
        self.guard_verdict.reset();
        for (pool, verdict) in &state.verdicts {
            for kind in VERDICTS {
                self.guard_verdict.with_label_values(&[pool, kind]).set(i64::from(kind == *verdict));
            }
        }
        for (route, pool, weight) in &state.weights {
            self.pool_weight.with_label_values(&[route, pool]).set(i64::from(*weight));
        }
        for (pool, tripped) in &state.tripped {
            self.pool_tripped.with_label_values(&[pool]).set(i64::from(*tripped));
        }
        for b in &state.backends {
            let labels = [b.pool.as_str(), b.addr.as_str()];
            self.in_flight.with_label_values(&labels).set(b.in_flight as i64);
            if !b.draining {
                self.backend_healthy.with_label_values(&labels).set(i64::from(b.healthy));
            }
            self.backend_draining.with_label_values(&labels).set(i64::from(b.draining));
            self.backend_weight_factor.with_label_values(&labels).set(b.weight_factor);
        }
    }
}
