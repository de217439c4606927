//! What a judge says: the verdict, the rule and span that decided it, and
//! the evidence behind it, as `/status`, the metrics and the history show
//! them.

use std::time::Duration;

use tokio::time::Instant;

use super::Counts;

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// With the stated confidence, no worse than allowed.
    Healthy,
    /// Neither shown yet.
    Inconclusive,
    /// With the stated confidence, worse than allowed: trip.
    Failing,
}

impl VerdictKind {
    /// Every verdict, in the order of the metric's series.
    pub const ALL: [VerdictKind; 3] = [VerdictKind::Healthy, VerdictKind::Inconclusive, VerdictKind::Failing];

    /// The label in `/status` and in `cutover_guard_verdict{verdict}`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Healthy => "healthy",
            VerdictKind::Inconclusive => "inconclusive",
            VerdictKind::Failing => "failing",
        }
    }
}

/// The rule that decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Failure share against the baseline's (`max_error_increase`).
    ErrorIncrease,
    /// Slow answers against the baseline's (`max_latency_ratio`).
    LatencyRatio,
    /// The window's failure share (`max_error_rate`).
    ErrorRate,
    /// The window's p99 (`max_p99_latency`).
    P99Latency,
}

impl Rule {
    /// The label (matches `cutover_guard_breaches_total{reason}` for the
    /// absolute limits).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ErrorIncrease => "error_increase",
            Rule::LatencyRatio => "latency_ratio",
            Rule::ErrorRate => "error_rate",
            Rule::P99Latency => "latency",
        }
    }
}

/// Which stretch of outcomes a verdict was judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Since the pool's current version began (or its last reset).
    Version,
    /// The recent span of the change detector.
    Recent,
    /// The sliding window of the absolute limits.
    Window,
}

/// What a verdict rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The rule that decided (the error rule for `healthy` and
    /// `inconclusive` verdicts with a baseline).
    pub rule: Rule,
    /// The stretch judged.
    pub scope: Scope,
    /// How long that stretch is.
    pub span: Duration,
    /// The pool's requests and bad outcomes (failures, or slow answers
    /// for the latency rules) over the stretch.
    pub pool: Counts,
    /// The baseline's, over the same stretch (zero without a baseline).
    pub baseline: Counts,
    /// The bound that decided: for `failing`, the lower confidence bound of
    /// the excess; for `healthy`, its upper bound (shares, not points).
    pub bound: Option<f64>,
    /// The allowance or limit it was held against.
    pub allowed: f64,
}

/// A verdict, its evidence, and why, in one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Which.
    pub kind: VerdictKind,
    /// On what.
    pub evidence: Evidence,
    /// For people: `canary failing: 4.8% of 310 vs stable 0.1% of 2,790;
    /// excess ≥ 2.6 points at 99% > allowed 1.0`.
    pub reason: String,
    /// Since when the pool has had this verdict.
    pub since: Instant,
}
