//! The config file's JSON Schema, for editors that complete and check TOML
//! against one (taplo, Even Better TOML): `cutover schema` prints it and
//! `docs/cutover.schema.json` is its committed copy.
//!
//! It is built from one table per TOML table of the file ([`TABLES`]): each
//! key with its type and a line of meaning. The schema says *shape* — keys,
//! TOML types, the few closed sets of words, the simple lower bounds — the
//! way [`super::raw`] does, and leaves the rest (cross references, clashes,
//! addresses) to validation, whose messages say more than an editor can. A
//! test here asks the parser itself which keys each table accepts (serde's
//! "expected one of" on an unknown key) and compares them with these tables,
//! so a key added to the parser without one here, or the reverse, fails.

use serde_json::{json, Map, Value};

/// What a key's value is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any string.
    Text,
    /// A duration string such as `"250ms"` or `"30s"`.
    Duration,
    /// An integer of at least this value.
    Integer(i64),
    /// A number between 0 and 1.
    Share,
    /// A number of at least 0.
    Number,
    /// A rollout's steps: percents, or tables of a weight and a hold, or pauses.
    Steps,
    /// `true` or `false`.
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// An array of strings; `true` when it must not be empty.
    TextList(bool),
    /// A table of name = integer weight (a route's split).
    Weights,
    /// A sub-table with these keys.
    Table(&'static Table),
    /// A table of named sub-tables with these keys (`[pools.NAME]`).
    Named(&'static Table),
    /// An array of tables with these keys (`[[routes]]`).
    Tables(&'static Table),
}

/// One key: its name, its kind, whether the file must have it, and a line
/// of meaning (docs/configuration.md has the whole story).
#[derive(Debug)]
pub struct Key {
    /// The TOML key.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether validation requires it.
    pub required: bool,
    /// What it sets.
    pub doc: &'static str,
}

/// One TOML table: where it is in the file and its keys.
#[derive(Debug)]
pub struct Table {
    /// Its place in the file, as docs/configuration.md heads it.
    pub path: &'static str,
    /// Its keys, in the order the reference lists them.
    pub keys: &'static [Key],
}

const fn key(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key { name, kind, required: false, doc }
}

const fn required(name: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key { name, kind, required: true, doc }
}

/// `[server.tls]`.
pub static TLS: Table = Table {
    path: "[server.tls]",
    keys: &[
        required("listen", Kind::Text, "TLS listen address, host:port."),
        required("cert", Kind::Text, "PEM certificate chain file."),
        required("key", Kind::Text, "PEM private key file."),
    ],
};

/// `[server]`.
pub static SERVER: Table = Table {
    path: "[server]",
    keys: &[
        key("listen", Kind::TextList(true), "Plain HTTP/1.1 and h2c listen addresses. Restart to change."),
        key("request_timeout", Kind::Duration, "Deadline for connect, send and the response head; 504 past it."),
        key("connect_timeout", Kind::Duration, "Deadline for opening a connection to a backend."),
        key("idle_timeout", Kind::Duration, "Idle downstream keep-alive connections close after this."),
        key("upstream_idle_timeout", Kind::Duration, "Pooled upstream connections unused this long are closed."),
        key("drain_timeout", Kind::Duration, "Longest wait for in-flight requests at shutdown or backend removal."),
        key("shutdown_delay", Kind::Duration, "After SIGTERM, keep serving this long while /ready answers 503."),
        key("max_request_header_bytes", Kind::Integer(1024), "Largest request head; 431 above it (1024-1048576)."),
        key("header_read_timeout", Kind::Duration, "Deadline for a client to send a whole HTTP/1 request head."),
        key("body_read_timeout", Kind::Duration, "Longest silence while a client sends a request body; 408 past it."),
        key("send_timeout", Kind::Duration, "Longest a response may wait on a client that reads nothing."),
        key("workers", Kind::Integer(1), "Runtime worker threads; one per CPU core by default."),
        key("allow_underscores_in_headers", Kind::Bool, "Forward request headers whose name contains '_'."),
        key("tls", Kind::Table(&TLS), "[server.tls]: a TLS listener."),
        key("request_id_header", Kind::Text, "Request ID header kept or made and passed both ways; \"\" turns it off."),
        key("request_id_max_len", Kind::Integer(1), "Longest client request ID kept; a longer one is replaced."),
        key("start_traces", Kind::Bool, "Start a W3C trace (traceparent) for requests that carry none."),
        key("pool_header", Kind::Text, "Response header naming the pool that served the request; off when absent."),
    ],
};

/// `[admin]`.
pub static ADMIN: Table = Table {
    path: "[admin]",
    keys: &[
        key("listen", Kind::Text, "Admin API listen address (loopback by default). Restart to change."),
        key("token_file", Kind::Text, "File whose content is the bearer token every write needs."),
        key("state_file", Kind::Text, "Overrides, trips and history are kept here across restarts."),
        key("allowed_hosts", Kind::TextList(false), "Host names the admin API answers to besides IPs and localhost."),
    ],
};

/// `[pools.NAME.health]`.
pub static HEALTH: Table = Table {
    path: "[pools.NAME.health]",
    keys: &[
        key("path", Kind::Text, "Path probed with GET; a 2xx is healthy."),
        key("interval", Kind::Duration, "Time between probes."),
        key("timeout", Kind::Duration, "Deadline of one probe; at most interval."),
        key("unhealthy_after", Kind::Integer(1), "Consecutive failed probes that mark a backend unhealthy."),
        key("healthy_after", Kind::Integer(1), "Consecutive good probes that mark it healthy again."),
    ],
};

/// `[pools.NAME.guard]`.
pub static GUARD: Table = Table {
    path: "[pools.NAME.guard]",
    keys: &[
        key(
            "max_error_rate",
            Kind::Share,
            "Largest tolerated share of failed requests, 0 to 1; required without a baseline.",
        ),
        key("max_p99_latency", Kind::Duration, "The pool also trips when its p99 latency exceeds this."),
        key("window", Kind::Duration, "Length of the sliding window."),
        key("min_requests", Kind::Integer(1), "Nothing is judged before the window holds this many requests."),
        key("baseline", Kind::Text, "Judge the pool against this pool over the same time."),
        key("max_error_increase", Kind::Share, "Allowed excess failure share over the baseline."),
        key(
            "max_latency_ratio",
            Kind::Number,
            "The pool's slow share is judged against this multiple of the baseline's p99.",
        ),
        key("confidence", Kind::Share, "Confidence of every verdict against the baseline."),
    ],
};

/// `[pools.NAME]`.
pub static POOL: Table = Table {
    path: "[pools.NAME]",
    keys: &[
        required("backends", Kind::TextList(true), "host:port, http://host:port or https://host:port."),
        key("lb", Kind::OneOf(&["p2c", "round_robin", "random"]), "How a request chooses a backend in the pool."),
        key("protocol", Kind::OneOf(&["http1", "h2"]), "The HTTP version spoken to the backends."),
        key("ca_file", Kind::Text, "Extra PEM CA certificates for the pool's https:// backends."),
        key("health", Kind::Table(&HEALTH), "[pools.NAME.health]: active health checks."),
        key("guard", Kind::Table(&GUARD), "[pools.NAME.guard]: automatic rollback on errors or latency."),
        key("slow_start", Kind::Duration, "A joining or returning backend's share ramps up over this."),
        key("slow_start_aggression", Kind::Number, "Shape of the slow-start ramp (1 = linear)."),
        key(
            "retry_unanswered",
            Kind::Bool,
            "Send an idempotent request closed unanswered once more, to another backend.",
        ),
        key(
            "grpc_failure_codes",
            Kind::TextList(false),
            "gRPC status names (such as \"INTERNAL\") that count as the backend's failure.",
        ),
    ],
};

/// `sticky = { … }`.
pub static STICKY: Table = Table {
    path: "sticky",
    keys: &[
        key("cookie", Kind::Text, "Keep a user on one pool by this cookie."),
        key("header", Kind::Text, "Keep a user on one pool by this header."),
    ],
};

/// `[[routes.force]]`.
pub static FORCE: Table = Table {
    path: "[[routes.force]]",
    keys: &[
        key("header", Kind::Text, "Match a request header by name (one of header and cookie)."),
        key("cookie", Kind::Text, "Match a cookie by name (one of header and cookie)."),
        required("value", Kind::Text, "The exact value to match."),
        required("pool", Kind::Text, "The pool matching requests go to; it must be in the split."),
    ],
};

/// `[routes.mirror]`.
pub static MIRROR: Table = Table {
    path: "[routes.mirror]",
    keys: &[
        required("pool", Kind::Text, "The shadow pool the copies go to."),
        key("percent", Kind::Integer(0), "Share of the route's requests copied, 0 to 100."),
        key("header", Kind::Text, "Only requests carrying this header are copied."),
        key("max_body", Kind::Text, "Largest request body copied, such as \"64KiB\"."),
    ],
};

/// `[routes.rollout]`.
pub static ROLLOUT: Table = Table {
    path: "[routes.rollout]",
    keys: &[
        required("pool", Kind::Text, "The canary: the new version, one of the route's split pools."),
        required("steps", Kind::Steps, "The canary's share at each step."),
        key("hold", Kind::Duration, "How long each step lasts at least."),
        key(
            "max_hold",
            Kind::Duration,
            "How long a step may stay inconclusive after its hold before the rollout pauses.",
        ),
        key("start", Kind::OneOf(&["on_new_version", "manual"]), "When the rollout starts by itself."),
        key("bake", Kind::Duration, "How long the canary is still judged after promotion."),
    ],
};

/// `[access_log]`.
pub static ACCESS_LOG: Table = Table {
    path: "[access_log]",
    keys: &[
        key("to", Kind::Text, "\"stdout\", \"stderr\" or a file path."),
        key("format", Kind::OneOf(&["json", "text"]), "The line format."),
        key("sample", Kind::Share, "Share of successful requests logged; failed ones always are."),
        key("query", Kind::Bool, "Keep query strings in the logged path."),
        key(
            "queue",
            Kind::Integer(1),
            "Lines that may wait for the writer before new ones are dropped (and 1 KiB of them per line).",
        ),
        key("flush", Kind::Duration, "The longest a line waits before it is written; at most 60s."),
        key("listeners", Kind::TextList(false), "Log only requests to these listen addresses."),
    ],
};

/// `[fleet]`.
pub static FLEET: Table = Table {
    path: "[fleet]",
    keys: &[
        required("etcd", Kind::TextList(true), "etcd's client URLs, such as [\"http://127.0.0.1:2379\"]."),
        key("prefix", Kind::Text, "The key prefix this fleet shares in etcd; \"/cutover\" by default."),
        key("replica", Kind::Text, "This replica's name; ${VAR} reads the environment. Host name and pid by default."),
        key("lease_ttl", Kind::Duration, "How long a dead replica or leader stays counted; whole seconds."),
        key("timeout", Kind::Duration, "Bound on one etcd call."),
        key("username", Kind::Text, "etcd user, when etcd has auth enabled."),
        key("password", Kind::Text, "etcd password (prefer password_file)."),
        key("password_file", Kind::Text, "File holding the etcd password."),
        key("ca_file", Kind::Text, "CA certificate (PEM) to trust for https:// endpoints."),
        key("cert_file", Kind::Text, "Client certificate (PEM) for etcd."),
        key("key_file", Kind::Text, "Client certificate's key (PEM)."),
        key(
            "shadow_judging",
            Kind::Bool,
            "Every replica judges the fleet's evidence, so a new leader goes on with the verdicts; true by default.",
        ),
    ],
};

/// `[[routes]]`.
pub static ROUTE: Table = Table {
    path: "[[routes]]",
    keys: &[
        required("name", Kind::Text, "Unique route name, used in /status, admin paths and metrics."),
        key("host", Kind::Text, "Exact host or a leading-wildcard host (*.example.com); any host if absent."),
        key("path_prefix", Kind::Text, "Matched on whole path segments; \"/\" by default."),
        required("split", Kind::Weights, "Relative weights per pool, such as { blue = 90, canary = 10 }."),
        key("sticky", Kind::Table(&STICKY), "{ cookie = \"NAME\" } or { header = \"NAME\" }, not both."),
        key("force", Kind::Tables(&FORCE), "[[routes.force]]: override rules."),
        key("mirror", Kind::Table(&MIRROR), "[routes.mirror]: copies of requests for a shadow pool."),
        key("rollout", Kind::Table(&ROLLOUT), "[routes.rollout]: a progressive rollout of one of the route's pools."),
    ],
};

/// The whole file.
pub static FILE: Table = Table {
    path: "the file",
    keys: &[
        key("server", Kind::Table(&SERVER), "[server]: listeners, timeouts and limits of the traffic side."),
        key("admin", Kind::Table(&ADMIN), "[admin]: the admin API."),
        key("access_log", Kind::Table(&ACCESS_LOG), "[access_log]: one line per finished request."),
        required("pools", Kind::Named(&POOL), "[pools.NAME]: named groups of backends."),
        required("routes", Kind::Tables(&ROUTE), "[[routes]]: which requests go where, in file order."),
        key("fleet", Kind::Table(&FLEET), "[fleet]: replicas sharing one state through etcd."),
    ],
};

/// Every table of the file, for the test that compares them with the parser.
pub static TABLES: [&Table; 14] = [
    &FILE,
    &SERVER,
    &TLS,
    &ADMIN,
    &ACCESS_LOG,
    &POOL,
    &HEALTH,
    &GUARD,
    &ROUTE,
    &STICKY,
    &FORCE,
    &MIRROR,
    &ROLLOUT,
    &FLEET,
];

/// The schema (draft 2020-12) as pretty-printed JSON, ending in no newline.
pub fn json_schema() -> String {
    let mut schema = Map::new();
    schema.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
    schema.insert("title".into(), json!("cutover.toml"));
    schema.insert(
        "description".into(),
        json!("The cutover config file. Shape only: `cutover check` validates the rest (docs/configuration.md)."),
    );
    if let Value::Object(file) = table(&FILE) {
        schema.extend(file);
    }
    serde_json::to_string_pretty(&Value::Object(schema)).unwrap_or_default()
}

fn table(t: &Table) -> Value {
    let properties: Map<String, Value> = t.keys.iter().map(|k| (k.name.to_string(), value(k))).collect();
    let required: Vec<&str> = t.keys.iter().filter(|k| k.required).map(|k| k.name).collect();
    let mut out = json!({"type": "object", "additionalProperties": false, "properties": properties});
    if !required.is_empty() {
        out["required"] = json!(required);
    }
    out
}

fn value(k: &Key) -> Value {
    let mut v = match k.kind {
        Kind::Text => json!({"type": "string"}),
        Kind::Duration => json!({"type": "string", "pattern": "^[0-9]", "examples": ["250ms", "30s", "5m"]}),
        Kind::Integer(min) => json!({"type": "integer", "minimum": min}),
        Kind::Share => json!({"type": "number", "minimum": 0, "maximum": 1}),
        Kind::Number => json!({"type": "number", "minimum": 0}),
        Kind::Steps => json!({
            "type": "array",
            "minItems": 1,
            "items": {"description": "A percent (25), { weight = 25, hold = \"10m\" } or { pause = true }."}
        }),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::OneOf(words) => json!({"type": "string", "enum": words}),
        Kind::TextList(non_empty) => {
            let mut list = json!({"type": "array", "items": {"type": "string"}});
            if non_empty {
                list["minItems"] = json!(1);
            }
            list
        }
        Kind::Weights => json!({"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}),
        Kind::Table(t) => table(t),
        Kind::Named(t) => json!({"type": "object", "additionalProperties": table(t)}),
        Kind::Tables(t) => json!({"type": "array", "items": table(t)}),
    };
    v["description"] = json!(k.doc);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the parser accepts in a table, from its refusal of one it
    /// does not know.
    fn parser_keys(toml_text: &str) -> Vec<String> {
        let err = toml::from_str::<super::super::raw::RawConfig>(toml_text).expect_err("an unknown key is refused");
        let message = err.to_string();
        let list = message.split("expected one of ").nth(1).or_else(|| message.split("expected ").nth(1));
        let list = list.unwrap_or_else(|| panic!("no list of keys in: {message}"));
        let list = list.lines().next().unwrap_or_default();
        // serde writes `a`, `b`, `c` for three or more and `a` or `b` for two.
        list.split(", ").flat_map(|k| k.split(" or ")).map(|k| k.trim().trim_matches('`').to_string()).collect()
    }

    #[test]
    fn every_table_has_the_keys_the_parser_accepts() {
        let probes: [(&Table, &str); 14] = [
            (&FILE, "zz_unknown = 1\n"),
            (&SERVER, "[server]\nzz_unknown = 1\n"),
            (&TLS, "[server.tls]\nzz_unknown = 1\n"),
            (&ADMIN, "[admin]\nzz_unknown = 1\n"),
            (&ACCESS_LOG, "[access_log]\nzz_unknown = 1\n"),
            (&POOL, "[pools.a]\nzz_unknown = 1\n"),
            (&HEALTH, "[pools.a.health]\nzz_unknown = 1\n"),
            (&GUARD, "[pools.a.guard]\nzz_unknown = 1\n"),
            (&ROUTE, "[[routes]]\nzz_unknown = 1\n"),
            (&STICKY, "[[routes]]\nsticky = { zz_unknown = \"x\" }\n"),
            (&FORCE, "[[routes]]\n[[routes.force]]\nzz_unknown = 1\n"),
            (&MIRROR, "[[routes]]\n[routes.mirror]\nzz_unknown = 1\n"),
            (&ROLLOUT, "[[routes]]\n[routes.rollout]\nzz_unknown = 1\n"),
            (&FLEET, "[fleet]\nzz_unknown = 1\n"),
        ];
        assert_eq!(probes.len(), TABLES.len(), "a probe for every table");
        for (table, probe) in probes {
            let mut ours: Vec<&str> = table.keys.iter().map(|k| k.name).collect();
            let mut parsers = parser_keys(probe);
            ours.sort_unstable();
            parsers.sort_unstable();
            assert_eq!(ours, parsers, "{}: the schema's keys and the parser's differ", table.path);
        }
    }

    #[test]
    fn the_schema_is_json_with_every_table() {
        let schema: Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        let pool = &schema["properties"]["pools"]["additionalProperties"];
        assert!(pool["properties"]["guard"].get("required").is_none(), "max_error_rate is optional with a baseline");
        assert_eq!(pool["properties"]["guard"]["properties"]["baseline"]["type"], "string");
        assert_eq!(
            schema["properties"]["routes"]["items"]["properties"]["force"]["items"]["required"],
            json!(["value", "pool"])
        );
    }
}
