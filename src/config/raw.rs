//! The config file exactly as written: serde structs that mirror the TOML of
//! SPEC §2 and nothing more.
//!
//! This layer only decides *shape*: which keys exist (every struct denies
//! unknown fields, so a typo is an error rather than a silently ignored
//! setting) and which TOML type each value has. It decides no *meaning* —
//! defaults, ranges and cross references belong to [`super::validate`]. That is
//! why almost every field is an `Option`, even the required ones: a missing key
//! is reported by validation with an operator-friendly message and the position
//! of the enclosing table, instead of serde's generic "missing field". Every
//! value is wrapped in a [`Spanned`] so that validation can point at it with
//! `file:line:col`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// `[server]`.
    pub(crate) server: Option<RawServer>,
    /// `[admin]`.
    pub(crate) admin: Option<RawAdmin>,
    /// `[access_log]`.
    pub(crate) access_log: Option<Spanned<RawAccessLog>>,
    /// `[pools.NAME]`, keyed by pool name.
    pub(crate) pools: Option<Spanned<OrderedMap<Spanned<RawPool>>>>,
    /// `[[routes]]`, in file order.
    pub(crate) routes: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    /// `[fleet]`.
    pub(crate) fleet: Option<Spanned<RawFleet>>,
}

/// `[fleet]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    /// etcd client URLs (required, non-empty).
    pub(crate) etcd: Option<Spanned<Vec<Spanned<String>>>>,
    /// The fleet's key prefix.
    pub(crate) prefix: Option<Spanned<String>>,
    /// This replica's name.
    pub(crate) replica: Option<Spanned<String>>,
    /// TTL of the replica's lease.
    pub(crate) lease_ttl: Option<Spanned<RawDuration>>,
    /// Bound on one etcd call.
    pub(crate) timeout: Option<Spanned<RawDuration>>,
    /// etcd user.
    pub(crate) username: Option<Spanned<String>>,
    /// etcd password, inline.
    pub(crate) password: Option<Spanned<String>>,
    /// File holding the etcd password.
    pub(crate) password_file: Option<Spanned<String>>,
    /// CA to trust for etcd.
    pub(crate) ca_file: Option<Spanned<String>>,
    /// Client certificate for etcd.
    pub(crate) cert_file: Option<Spanned<String>>,
    /// Client key for etcd.
    pub(crate) key_file: Option<Spanned<String>>,
    /// Whether followers judge the fleet's evidence too.
    pub(crate) shadow_judging: Option<bool>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Plain listen addresses.
    pub(crate) listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// Whole-request deadline.
    pub(crate) request_timeout: Option<Spanned<RawDuration>>,
    /// Upstream connect deadline.
    pub(crate) connect_timeout: Option<Spanned<RawDuration>>,
    /// Downstream keep-alive idle time.
    pub(crate) idle_timeout: Option<Spanned<RawDuration>>,
    /// Upstream (pooled) keep-alive idle time.
    pub(crate) upstream_idle_timeout: Option<Spanned<RawDuration>>,
    /// Longest wait for in-flight requests.
    pub(crate) drain_timeout: Option<Spanned<RawDuration>>,
    /// The preStop sleep after SIGTERM.
    pub(crate) shutdown_delay: Option<Spanned<RawDuration>>,
    /// Request head limit.
    pub(crate) max_request_header_bytes: Option<Spanned<i64>>,
    /// Deadline for a client to send a whole request head (slowloris).
    pub(crate) header_read_timeout: Option<Spanned<RawDuration>>,
    /// Longest silence while a client sends a request body (slow POST).
    pub(crate) body_read_timeout: Option<Spanned<RawDuration>>,
    /// Longest a response may wait on a client that does not read (slow read).
    pub(crate) send_timeout: Option<Spanned<RawDuration>>,
    /// Runtime worker threads.
    pub(crate) workers: Option<Spanned<i64>>,
    /// Forward request headers whose name contains `_`.
    pub(crate) allow_underscores_in_headers: Option<bool>,
    /// `[server.tls]`.
    pub(crate) tls: Option<Spanned<RawTls>>,
    /// Request ID header name; empty turns request IDs off.
    pub(crate) request_id_header: Option<Spanned<String>>,
    /// Longest client request ID kept.
    pub(crate) request_id_max_len: Option<Spanned<i64>>,
    /// Start a W3C trace when a request carries none.
    pub(crate) start_traces: Option<bool>,
    /// Response header naming the pool that served the request.
    pub(crate) pool_header: Option<Spanned<String>>,
}

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    /// `"stdout"`, `"stderr"` or a file path.
    pub(crate) to: Option<Spanned<String>>,
    /// `"json"` or `"text"`.
    pub(crate) format: Option<Spanned<String>>,
    /// Share of successful requests logged.
    pub(crate) sample: Option<Spanned<f64>>,
    /// Keep query strings.
    pub(crate) query: Option<bool>,
    /// Records waiting for the writer before new ones are dropped.
    pub(crate) queue: Option<Spanned<i64>>,
    /// The longest a line waits before it is written.
    pub(crate) flush: Option<Spanned<RawDuration>>,
    /// Log only these listeners' requests.
    pub(crate) listeners: Option<Vec<Spanned<String>>>,
}

/// `[server.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// TLS listen address.
    pub(crate) listen: Option<Spanned<String>>,
    /// Certificate chain path.
    pub(crate) cert: Option<Spanned<String>>,
    /// Private key path.
    pub(crate) key: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// Admin API listen address.
    pub(crate) listen: Option<Spanned<String>>,
    /// Bearer token file.
    pub(crate) token_file: Option<Spanned<String>>,
    /// Persisted runtime state.
    pub(crate) state_file: Option<Spanned<String>>,
    /// Extra host names the admin API answers to.
    pub(crate) allowed_hosts: Option<Vec<Spanned<String>>>,
}

/// `[pools.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    /// Backend addresses (required, non-empty).
    pub(crate) backends: Option<Spanned<Vec<Spanned<String>>>>,
    /// In-pool balancing policy name.
    pub(crate) lb: Option<Spanned<String>>,
    /// Upstream protocol: "http1" or "h2".
    pub(crate) protocol: Option<Spanned<String>>,
    /// Extra CA certificates (PEM) trusted for `https://` backends.
    pub(crate) ca_file: Option<Spanned<String>>,
    /// `[pools.NAME.health]`.
    pub(crate) health: Option<RawHealth>,
    /// `[pools.NAME.guard]`.
    pub(crate) guard: Option<Spanned<RawGuard>>,
    /// Slow start window for joining and returning backends.
    pub(crate) slow_start: Option<Spanned<RawDuration>>,
    /// Slow start ramp exponent's inverse.
    pub(crate) slow_start_aggression: Option<Spanned<f64>>,
    /// Whether a request closed unanswered is sent again (default true).
    pub(crate) retry_unanswered: Option<bool>,
    /// gRPC status code names that count as the backend's failure.
    pub(crate) grpc_failure_codes: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[pools.NAME.health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    /// Probe path.
    pub(crate) path: Option<Spanned<String>>,
    /// Time between probes.
    pub(crate) interval: Option<Spanned<RawDuration>>,
    /// Probe deadline.
    pub(crate) timeout: Option<Spanned<RawDuration>>,
    /// Consecutive failures before unhealthy.
    pub(crate) unhealthy_after: Option<Spanned<i64>>,
    /// Consecutive successes before healthy.
    pub(crate) healthy_after: Option<Spanned<i64>>,
}

/// `[pools.NAME.guard]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    /// Failure share threshold (required without a baseline). A TOML integer (`0`, `1`) is
    /// accepted too: serde's `f64` takes integers.
    pub(crate) max_error_rate: Option<Spanned<f64>>,
    /// p99 latency threshold.
    pub(crate) max_p99_latency: Option<Spanned<RawDuration>>,
    /// Sliding window length.
    pub(crate) window: Option<Spanned<RawDuration>>,
    /// Requests needed before judging.
    pub(crate) min_requests: Option<Spanned<i64>>,
    /// The pool judged against.
    pub(crate) baseline: Option<Spanned<String>>,
    /// Allowed excess failure share over the baseline's.
    pub(crate) max_error_increase: Option<Spanned<f64>>,
    /// Allowed p99 as a multiple of the baseline's.
    pub(crate) max_latency_ratio: Option<Spanned<f64>>,
    /// Confidence of every verdict.
    pub(crate) confidence: Option<Spanned<f64>>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    /// Route name (required).
    pub(crate) name: Option<Spanned<String>>,
    /// Host match.
    pub(crate) host: Option<Spanned<String>>,
    /// Path prefix.
    pub(crate) path_prefix: Option<Spanned<String>>,
    /// Pool weights in file order (required).
    pub(crate) split: Option<Spanned<OrderedMap<Spanned<i64>>>>,
    /// `{ cookie = "..." }` or `{ header = "..." }`.
    pub(crate) sticky: Option<Spanned<RawSticky>>,
    /// `[[routes.force]]`.
    pub(crate) force: Option<Vec<Spanned<RawForce>>>,
    /// `[routes.mirror]`.
    pub(crate) mirror: Option<Spanned<RawMirror>>,
    /// `[routes.rollout]`.
    pub(crate) rollout: Option<Spanned<RawRollout>>,
}

/// `[routes.rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    /// The canary pool.
    pub(crate) pool: Option<Spanned<String>>,
    /// Percent integers, `{ weight, hold }` or `{ pause = true }` tables.
    pub(crate) steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    /// Each step's hold.
    pub(crate) hold: Option<Spanned<RawDuration>>,
    /// Longest inconclusive wait after a hold.
    pub(crate) max_hold: Option<Spanned<RawDuration>>,
    /// "on_new_version" or "manual".
    pub(crate) start: Option<Spanned<String>>,
    /// Judging after promotion.
    pub(crate) bake: Option<Spanned<RawDuration>>,
}

/// One rollout step as written: `25`, `{ weight = 25, hold = "10m" }` or
/// `{ pause = true }`.
#[derive(Debug)]
pub(crate) enum RawStep {
    /// A bare integer: the canary's percent.
    Percent(i64),
    /// A table.
    Table(RawStepTable),
}

/// A step written as a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStepTable {
    /// The canary's percent.
    pub(crate) weight: Option<i64>,
    /// This step's own hold.
    pub(crate) hold: Option<RawDuration>,
    /// A step that waits for an operator.
    pub(crate) pause: Option<bool>,
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;

        impl<'de> Visitor<'de> for StepVisitor {
            type Value = RawStep;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percent like 25, or a table like { weight = 25, hold = \"10m\" } or { pause = true }")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStep, E> {
                Ok(RawStep::Percent(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawStep, A::Error> {
                RawStepTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawStep::Table)
            }
        }

        deserializer.deserialize_any(StepVisitor)
    }
}

/// `[routes.mirror]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirror {
    /// The shadow pool (required).
    pub(crate) pool: Option<Spanned<String>>,
    /// Share of requests copied, 0..=100.
    pub(crate) percent: Option<Spanned<i64>>,
    /// Only requests carrying this header are copied.
    pub(crate) header: Option<Spanned<String>>,
    /// Largest body copied, as "64KiB".
    pub(crate) max_body: Option<Spanned<String>>,
}

/// `sticky = { cookie = "..." }` or `{ header = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    /// Cookie name.
    pub(crate) cookie: Option<Spanned<String>>,
    /// Header name.
    pub(crate) header: Option<Spanned<String>>,
}

/// `[[routes.force]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForce {
    /// Header name to match.
    pub(crate) header: Option<Spanned<String>>,
    /// Cookie name to match.
    pub(crate) cookie: Option<Spanned<String>>,
    /// Exact value to match.
    pub(crate) value: Option<Spanned<String>>,
    /// Target pool.
    pub(crate) pool: Option<Spanned<String>>,
}

/// A duration as written (`"250ms"`, `"30s"`). Parsed in validation, where the
/// key name is known; this type only exists so that a bare number (`timeout =
/// 5`) is rejected with a message that says what a duration looks like.
#[derive(Debug)]
pub(crate) struct RawDuration(pub(crate) String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"250ms\", \"30s\" or \"5m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A TOML table read as a list of `(key, value)` pairs **in file order**.
///
/// `split` needs the order the operator wrote: it lays out the sticky bucket
/// ranges, so `{ blue = 90, canary = 10 }` must stay blue-then-canary. The
/// `toml` crate (without its `preserve_order` feature) hands table entries over
/// sorted by key, so the order is restored here from the keys' byte spans —
/// which are exact file positions whatever order serde sees them in.
/// Duplicate keys never reach this point: TOML itself rejects them.
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub(crate) Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of `name = value` entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap<V>, A::Error> {
                let mut entries: Vec<(Spanned<String>, V)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                entries.sort_by_key(|(key, _)| key.span().start);
                Ok(OrderedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}
