//! A guarded pool's verdict as `/status` shows it, under the pool's
//! `guard`: `verdict` (kind, one-line reason, since when), `evidence` (the
//! figures the deciding rule weighed), `baseline`, and the absolute limits
//! (`max_error_rate`, `max_p99_ms`) the console draws.

use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::GuardConfig;
use crate::judge::{Rule, Scope, Verdict};
use crate::timestamp::rfc3339;

/// Add `verdict`, `evidence`, `baseline` and the limits of `config` to a
/// pool's `guard` object.
pub(super) fn add(guard: &mut Value, verdict: Option<&Verdict>, config: Option<&GuardConfig>) {
    let Some(object) = guard.as_object_mut() else { return };
    object.insert("baseline".into(), json!(config.and_then(|c| c.baseline.as_deref())));
    object.insert("max_error_rate".into(), json!(config.and_then(|c| c.max_error_rate)));
    object.insert("max_p99_ms".into(), json!(config.and_then(|c| c.max_p99_latency).map(|d| d.as_secs_f64() * 1000.0)));
    let Some(v) = verdict else {
        object.insert("verdict".into(), json!({"kind": "inconclusive", "reason": "not judged yet", "since": null}));
        object.insert("evidence".into(), Value::Null);
        return;
    };
    // The verdict's instant on the wall clock.
    let age = Instant::now().saturating_duration_since(v.since);
    let since = SystemTime::now().checked_sub(age).map(rfc3339);
    object.insert("verdict".into(), json!({"kind": v.kind.as_str(), "reason": v.reason, "since": since}));
    let e = &v.evidence;
    let bad = match e.rule {
        Rule::ErrorIncrease | Rule::ErrorRate => "failures",
        Rule::LatencyRatio | Rule::P99Latency => "slow",
    };
    let scope = match e.scope {
        Scope::Version => "version",
        Scope::Recent => "recent",
        Scope::Window => "window",
    };
    object.insert(
        "evidence".into(),
        json!({
            "rule": e.rule.as_str(),
            "scope": scope,
            "span_s": e.span.as_secs_f64(),
            "pool": {"requests": e.pool.requests, bad: e.pool.bad},
            "baseline": {"requests": e.baseline.requests, bad: e.baseline.bad},
            "bound": e.bound,
            "allowed": e.allowed,
        }),
    );
}
