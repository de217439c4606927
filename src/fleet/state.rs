//! The fleet's shared state in etcd: the key layout and the JSON of each
//! key.
//!
//! Under the fleet's prefix:
//!
//! - `<prefix>/state/routes/<route>`: a route's admin override and its
//!   rollout's state;
//! - `<prefix>/state/pools/<pool>`: a pool's trip;
//! - `<prefix>/replicas/<replica>`: a live replica, under its lease, with
//!   a digest of its config file;
//! - `<prefix>/leader`: the elected leader ([`super::election`]).
//!
//! One key per route and one per pool is the unit of conflict: a change
//! compares the `mod_revision` of exactly the keys it writes, so changes to
//! different routes never conflict, and a change that trips a canary while
//! aborting its route's rollout writes both keys or neither. Every value
//! names the replica that wrote it and the cause, for `etcdctl` readers and
//! for the other replicas' history, and who made the change (an operator or
//! the replica itself): an automatic trip that loses to an operator's reset
//! is dropped, one that loses to anything else is made again.

use serde::{Deserialize, Serialize};

use crate::control::{Maker, PoolShared, RouteShared, SharedKey, SharedValue};

/// Where the shared state lives: `<prefix>/state/`.
pub fn state_prefix(prefix: &str) -> String {
    format!("{prefix}/state/")
}

/// Where live replicas are listed: `<prefix>/replicas/`.
pub fn replicas_prefix(prefix: &str) -> String {
    format!("{prefix}/replicas/")
}

/// The etcd key of a shared unit.
pub fn key_of(prefix: &str, key: &SharedKey) -> String {
    match key {
        SharedKey::Route(route) => format!("{prefix}/state/routes/{route}"),
        SharedKey::Pool(pool) => format!("{prefix}/state/pools/{pool}"),
    }
}

/// The shared unit an etcd key names; `None` for a key outside the layout.
pub fn unit_of(prefix: &str, key: &str) -> Option<SharedKey> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("/state/")?;
    if let Some(route) = rest.strip_prefix("routes/").filter(|r| !r.is_empty() && !r.contains('/')) {
        return Some(SharedKey::Route(route.to_string()));
    }
    rest.strip_prefix("pools/").filter(|p| !p.is_empty() && !p.contains('/')).map(|p| SharedKey::Pool(p.to_string()))
}

/// Who wrote a unit and why, beside the unit itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    /// The replica that wrote it.
    pub by: String,
    /// The cause of the change, as that replica's `/history` shows it.
    pub cause: String,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Who made the change: `operator` or `automatic` (absent: unknown,
    /// written by an older cutover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker: Option<Maker>,
    /// The unit.
    #[serde(flatten)]
    pub unit: T,
}

/// A decoded key: the unit, who wrote it and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Which unit.
    pub key: SharedKey,
    /// Its value.
    pub value: SharedValue,
    /// The replica that wrote it.
    pub by: String,
    /// Why.
    pub cause: String,
    /// Who made the change, when the writer said.
    pub maker: Option<Maker>,
}

impl Decoded {
    /// Whether this is a pool's trip cleared by an operator (a reset, or a
    /// rollout an operator started again).
    pub fn is_operator_reset(&self) -> bool {
        self.maker == Some(Maker::Operator) && matches!(&self.value, SharedValue::Pool(unit) if unit.trip.is_none())
    }
}

/// The JSON stored for `value`, changed by replica `by` at `time`, made by `maker`.
pub fn encode(value: &SharedValue, by: &str, cause: &str, maker: Maker, time: &str) -> Vec<u8> {
    let (by, cause, time, maker) = (by.to_string(), cause.to_string(), time.to_string(), Some(maker));
    let json = match value {
        SharedValue::Route(unit) => serde_json::to_vec(&Stored { by, cause, time, maker, unit: unit.clone() }),
        SharedValue::Pool(unit) => serde_json::to_vec(&Stored { by, cause, time, maker, unit: unit.clone() }),
    };
    json.unwrap_or_default()
}

/// Decode the value of etcd key `key`; an error names what is wrong.
pub fn decode(prefix: &str, key: &str, value: &[u8]) -> Result<Decoded, String> {
    let unit = unit_of(prefix, key).ok_or_else(|| format!("{key}: not a key of the fleet's state"))?;
    let bad = |e: serde_json::Error| format!("{key}: {e}");
    Ok(match &unit {
        SharedKey::Route(_) => {
            let stored: Stored<RouteShared> = serde_json::from_slice(value).map_err(bad)?;
            let (by, cause, maker) = (stored.by, stored.cause, stored.maker);
            Decoded { key: unit, value: SharedValue::Route(stored.unit), by, cause, maker }
        }
        SharedKey::Pool(_) => {
            let stored: Stored<PoolShared> = serde_json::from_slice(value).map_err(bad)?;
            let (by, cause, maker) = (stored.by, stored.cause, stored.maker);
            Decoded { key: unit, value: SharedValue::Pool(stored.unit), by, cause, maker }
        }
    })
}

/// A live replica's record under `<prefix>/replicas/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Its name.
    pub replica: String,
    /// A digest of its config file (hex), to tell different files apart.
    pub config: String,
    /// When it started, RFC 3339 UTC.
    pub started: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Trip;

    #[test]
    fn keys_round_trip_and_stay_inside_the_prefix() {
        for unit in [SharedKey::Route("shop".into()), SharedKey::Pool("canary".into())] {
            let key = key_of("/cutover/edge", &unit);
            assert_eq!(unit_of("/cutover/edge", &key), Some(unit));
        }
        assert_eq!(key_of("/c", &SharedKey::Pool("blue".into())), "/c/state/pools/blue");
        assert_eq!(unit_of("/c", "/c/replicas/a"), None);
        assert_eq!(unit_of("/c", "/other/state/pools/blue"), None);
        assert_eq!(unit_of("/c", "/c/state/pools/"), None);
        assert_eq!(unit_of("/c", "/c/state/pools/a/b"), None);
    }

    #[test]
    fn a_unit_survives_etcd_with_its_author() {
        let trip = Trip {
            reason: crate::control::TripReason::Manual,
            detail: "tripped by an operator".into(),
            revision: 4,
            backends: vec!["127.0.0.1:9003".into()],
        };
        let value = SharedValue::Pool(PoolShared { trip: Some(trip), reset_ms: None });
        let bytes = encode(&value, "edge-1", "admin: tripped pool canary", Maker::Operator, "2026-01-01T00:00:00Z");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains("\"by\":\"edge-1\"") && text.contains("\"trip\""), "{text}");
        assert!(text.contains("\"maker\":\"operator\""), "{text}");
        let decoded = decode("/c", "/c/state/pools/canary", &bytes).expect("decodes");
        assert_eq!(decoded.value, value);
        assert_eq!((decoded.by.as_str(), decoded.maker), ("edge-1", Some(Maker::Operator)));
        assert!(!decoded.is_operator_reset(), "a trip is no reset");
        let reset = SharedValue::Pool(PoolShared { trip: None, reset_ms: None });
        let by_hand = encode(&reset, "edge-2", "admin: reset pool canary", Maker::Operator, "2026-01-01T00:00:01Z");
        assert!(decode("/c", "/c/state/pools/canary", &by_hand).expect("decodes").is_operator_reset());
        let by_itself = encode(&reset, "edge-2", "fleet", Maker::Automatic, "2026-01-01T00:00:01Z");
        assert!(!decode("/c", "/c/state/pools/canary", &by_itself).expect("decodes").is_operator_reset());
        // A value without a maker (an older writer) is no operator's reset.
        let old = br#"{"by":"edge-3","cause":"admin: reset pool canary","time":"t","trip":null}"#;
        assert_eq!(decode("/c", "/c/state/pools/canary", old).expect("decodes").maker, None);
        assert!(decode("/c", "/c/state/pools/canary", b"{").is_err());
        assert!(decode("/c", "/c/nope", &bytes).is_err());
    }
}
