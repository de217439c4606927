//! How a guarded pool is judged: the settings of its judge, their
//! defaults, and the checks that refuse settings no judgement can honour
//! (a pool that is its own baseline, a confidence of 1, a window shorter
//! than a tick).

use std::time::Duration;

use super::{text, TICK};

/// The least `max_latency_ratio`: a pool may be as slow as its baseline.
const MIN_LATENCY_RATIO: f64 = 1.0;
/// The most `max_latency_ratio`: far past the range of the latency
/// histogram, whose buckets end near 105 s, so a larger ratio
/// could only mean "never"; bounded so that the threshold stays a duration.
const MAX_LATENCY_RATIO: f64 = 1000.0;

/// How a guarded pool is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// The pool it is judged against, if any.
    pub baseline: Option<String>,
    /// Allowed excess of its failure share over the baseline's (0.01: one
    /// percentage point).
    pub max_error_increase: f64,
    /// If set, the latency rule: its answers slower than this multiple of
    /// the baseline's p99 may exceed the baseline's share of them by at most
    /// [`LATENCY_ALLOWANCE`].
    pub max_latency_ratio: Option<f64>,
    /// Confidence of every verdict, in `0.5..1`.
    pub confidence: f64,
    /// Absolute limit on the window's failure share.
    pub max_error_rate: Option<f64>,
    /// Absolute limit on the window's p99 latency.
    pub max_p99_latency: Option<Duration>,
    /// The least evidence: requests in the window for an absolute limit,
    /// and since the version began for a `healthy` verdict.
    pub min_requests: u64,
    /// Length of the window of the absolute limits and the baseline's p99.
    pub window: Duration,
}

impl Default for JudgeConfig {
    fn default() -> JudgeConfig {
        JudgeConfig {
            baseline: None,
            max_error_increase: 0.01,
            max_latency_ratio: None,
            confidence: 0.99,
            max_error_rate: None,
            max_p99_latency: None,
            min_requests: 100,
            window: Duration::from_secs(30),
        }
    }
}

/// A setting the judge cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guard.{field}: {message}")]
pub struct ConfigError {
    /// The key, as written in the file (`max_error_increase`).
    pub field: &'static str,
    /// What is wrong, and what would do.
    pub message: String,
}

impl JudgeConfig {
    /// Check the settings of pool `pool`'s guard (the config validator maps
    /// the field to its place in the file).
    pub fn check(&self, pool: &str) -> Result<(), ConfigError> {
        let bad = |field, message: String| Err(ConfigError { field, message });
        if let Some(baseline) = &self.baseline {
            if baseline.is_empty() {
                return bad("baseline", "is empty; name another pool, e.g. baseline = \"stable\"".into());
            }
            if baseline == pool {
                return bad("baseline", format!("pool \"{pool}\" cannot be its own baseline; name another pool"));
            }
        }
        if !(0.0..1.0).contains(&self.max_error_increase) {
            return bad(
                "max_error_increase",
                format!("{} is outside 0..1; e.g. 0.01 allows one percentage point", self.max_error_increase),
            );
        }
        if !(0.5..1.0).contains(&self.confidence) {
            return bad("confidence", format!("{} is outside 0.5..1; e.g. 0.99", self.confidence));
        }
        if let Some(ratio) = self.max_latency_ratio {
            if ratio.is_nan() || ratio < MIN_LATENCY_RATIO {
                return bad("max_latency_ratio", format!("{ratio} is below {MIN_LATENCY_RATIO}; e.g. 1.5"));
            }
            if ratio > MAX_LATENCY_RATIO {
                return bad("max_latency_ratio", format!("{ratio:e} is above {MAX_LATENCY_RATIO}; e.g. 1.5"));
            }
            if self.baseline.is_none() {
                return bad("max_latency_ratio", "needs a baseline to compare with; add baseline = \"POOL\"".into());
            }
        }
        if let Some(rate) = self.max_error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return bad("max_error_rate", format!("{rate} is outside 0..1; e.g. 0.02"));
            }
        }
        if self.min_requests == 0 {
            return bad("min_requests", "must be at least 1".into());
        }
        if self.window < TICK {
            return bad("window", format!("must be at least {}", text::span(TICK)));
        }
        Ok(())
    }
}
