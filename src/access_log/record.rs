//! One access-log record: what a line says of its request.
//!
//! A record lives from the request's head to its end. It shares what it
//! needs of the request rather than copying it: `http`'s URI and header
//! values hold reference-counted bytes, so keeping the URI, the `Host`
//! header and the request ID costs a count each, not an allocation. Route
//! and pool names are shared with the config, and the backend's name is
//! borrowed for the moment the line is made. It is turned into a line on
//! the thread that finishes the request (`line`), so nothing of it crosses
//! threads. The JSON field names are the documented
//! interface of the log and do not change lightly: log shippers and
//! queries depend on them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri};
use serde::Serialize;
use tokio::time::Instant;

/// The line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// A fixed space-separated text line, quoted where a value may hold spaces.
    Text,
}

/// What a line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A request and its answer.
    Request,
    /// An upgraded connection (WebSocket), logged when it closes.
    Tunnel,
}

/// How the request's pool was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// A `force` rule (header or cookie) named the pool.
    Forced,
    /// The sticky bucket of the user's key chose it.
    Sticky,
    /// A weighted random pick chose it.
    Weighted,
}

impl Choice {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Choice::Forced => "forced",
            Choice::Sticky => "sticky",
            Choice::Weighted => "weighted",
        }
    }
}

/// One finished request (or closed tunnel); `'a` is the life of the
/// backend's name, borrowed when the request ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Request or tunnel.
    pub kind: Kind,
    /// When the request's head arrived (set with the duration, by `ended`).
    pub time: SystemTime,
    /// The client's address as the proxy saw it.
    pub client: SocketAddr,
    /// The request method.
    pub method: Method,
    /// The request's URI: its path, its query (see `keep_query`), and the
    /// host when it names one (HTTP/2's `:authority`, an absolute-form target).
    pub uri: Uri,
    /// The `Host` header, the host when the URI names none.
    pub host_header: Option<HeaderValue>,
    /// Whether the line shows the query.
    pub keep_query: bool,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// The status the client got (`101` for a tunnel).
    pub status: u16,
    /// Bytes of request body read from the client (client to backend, for a tunnel).
    pub bytes_in: u64,
    /// Bytes of response body written to the client (backend to client, for a tunnel).
    pub bytes_out: u64,
    /// From the request head to the last byte of the answer (tunnel: to its close).
    pub duration: Duration,
    /// From sending upstream to the answer's head; `None` when no backend answered.
    pub upstream_ttfb: Option<Duration>,
    /// The route that matched, if any.
    pub route: Option<Arc<str>>,
    /// The pool chosen, if any.
    pub pool: Option<Arc<str>>,
    /// The backend that served it (`host:port`), if one was reached.
    pub backend: Option<&'a str>,
    /// The config revision of the snapshot that served it.
    pub revision: u64,
    /// How the pool was chosen.
    pub choice: Option<Choice>,
    /// How many times the request was sent again (to the same or another backend).
    pub retries: u32,
    /// Why the proxy answered itself (`connect`, `timeout`, `reset`, …), if it did.
    pub failure: Option<&'static str>,
    /// The request ID, as passed to the backend.
    pub request_id: Option<HeaderValue>,
    /// The W3C trace ID, as passed to the backend (logged as 32 hex digits).
    pub trace_id: Option<[u8; 16]>,
}

impl Record<'_> {
    /// Whether the request counts as failed for sampling: the proxy answered
    /// itself, or the answer is a 5xx.
    pub fn failed(&self) -> bool {
        self.failure.is_some() || self.status >= 500
    }

    /// The request begun at `started` ends now: its duration, and the wall
    /// clock's time of its start. Reading the wall clock once, at the end,
    /// costs one clock read fewer than stamping the start when it happens.
    pub fn ended(&mut self, started: Instant) {
        self.duration = Instant::now().saturating_duration_since(started);
        let now = SystemTime::now();
        self.time = now.checked_sub(self.duration).unwrap_or(now);
    }

    /// The host the client asked for: the URI's authority, else the `Host`
    /// header; empty if neither names one (or the header is not text).
    pub fn host(&self) -> &str {
        match self.uri.authority() {
            Some(authority) => authority.as_str(),
            None => self.host_header.as_ref().and_then(|value| value.to_str().ok()).unwrap_or(""),
        }
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query, when the log keeps queries and the request has one.
    pub fn query(&self) -> Option<&str> {
        self.uri.query().filter(|_| self.keep_query)
    }

    /// The request ID's bytes. The proxy keeps a client's ID only when
    /// `request_id::acceptable` says so and makes its own of hex digits, so
    /// they need no escaping in either format.
    pub fn request_id(&self) -> Option<&[u8]> {
        let id = self.request_id.as_ref()?.as_bytes();
        debug_assert!(super::request_id::acceptable(id, usize::MAX), "{id:?}");
        Some(id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Record<'static> {
        Record {
            kind: Kind::Request,
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_687_200_123),
            client: "127.0.0.1:50000".parse().expect("addr"),
            method: Method::GET,
            uri: Uri::from_static("/cart?id=1"),
            host_header: Some(HeaderValue::from_static("shop.example")),
            keep_query: true,
            protocol: "HTTP/1.1",
            status: 502,
            bytes_in: 0,
            bytes_out: 11,
            duration: Duration::from_micros(12_345),
            upstream_ttfb: None,
            route: Some("shop".into()),
            pool: Some("canary".into()),
            backend: Some("127.0.0.1:9001"),
            revision: 3,
            choice: Some(Choice::Sticky),
            retries: 1,
            failure: Some("connect"),
            request_id: Some(HeaderValue::from_static("abc-1")),
            trace_id: Some([
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
            ]),
        }
    }

    fn line(record: &Record<'_>, format: Format) -> String {
        let mut out = Vec::new();
        record.write_line(format, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn json_line_has_every_field() {
        let out = line(&sample(), Format::Json);
        assert!(out.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(out.trim_end()).expect("json");
        assert_eq!(value["time"], "2026-11-26T10:00:00.123Z");
        assert_eq!(value["kind"], "request");
        assert_eq!(value["client"], "127.0.0.1:50000");
        assert_eq!(value["query"], "id=1");
        assert_eq!(value["status"], 502);
        assert_eq!(value["duration_ms"], 12.345);
        assert!(value["upstream_ttfb_ms"].is_null());
        assert_eq!(value["pool"], "canary");
        assert_eq!(value["revision"], 3);
        assert_eq!(value["choice"], "sticky");
        assert_eq!(value["retries"], 1);
        assert_eq!(value["failure"], "connect");
        assert_eq!(value["request_id"], "abc-1");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn json_line_is_exactly_the_documented_shape() {
        let mut record = sample();
        record.upstream_ttfb = Some(Duration::from_micros(3_000));
        record.duration = Duration::from_nanos(1_000_499_600);
        record.host_header = Some(HeaderValue::from_static("shop\"ex\\ample\t"));
        let out = line(&record, Format::Json);
        assert_eq!(
            out,
            "{\"time\":\"2026-11-26T10:00:00.123Z\",\"kind\":\"request\",\"client\":\"127.0.0.1:50000\",\
             \"method\":\"GET\",\"host\":\"shop\\\"ex\\\\ample\\t\",\"path\":\"/cart\",\"query\":\"id=1\",\
             \"protocol\":\"HTTP/1.1\",\"status\":502,\"bytes_in\":0,\"bytes_out\":11,\"duration_ms\":1000.5,\
             \"upstream_ttfb_ms\":3.0,\"route\":\"shop\",\"pool\":\"canary\",\"backend\":\"127.0.0.1:9001\",\
             \"revision\":3,\"choice\":\"sticky\",\"retries\":1,\"failure\":\"connect\",\"request_id\":\"abc-1\",\
             \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}\n"
        );
        let mut record = sample();
        record.keep_query = false;
        record.route = None;
        record.choice = None;
        record.failure = None;
        record.request_id = None;
        record.trace_id = None;
        record.kind = Kind::Tunnel;
        record.client = "[::1]:8080".parse().expect("addr");
        let out = line(&record, Format::Json);
        assert_eq!(
            out,
            "{\"time\":\"2026-11-26T10:00:00.123Z\",\"kind\":\"tunnel\",\"client\":\"[::1]:8080\",\
             \"method\":\"GET\",\"host\":\"shop.example\",\"path\":\"/cart\",\
             \"protocol\":\"HTTP/1.1\",\"status\":502,\"bytes_in\":0,\"bytes_out\":11,\"duration_ms\":12.345,\
             \"upstream_ttfb_ms\":null,\"route\":null,\"pool\":\"canary\",\"backend\":\"127.0.0.1:9001\",\
             \"revision\":3,\"choice\":null,\"retries\":1,\"failure\":null,\"request_id\":null,\"trace_id\":null}\n"
        );
    }

    #[test]
    fn json_leaves_out_a_query_that_is_not_kept() {
        let mut record = sample();
        record.keep_query = false;
        let out = line(&record, Format::Json);
        let value: serde_json::Value = serde_json::from_str(out.trim_end()).expect("json");
        assert!(value.get("query").is_none());
    }

    #[test]
    fn text_line_is_fixed_and_escaped() {
        let mut record = sample();
        record.host_header = Some(HeaderValue::from_static("shop\"ex\tample"));
        let out = line(&record, Format::Text);
        assert_eq!(
            out,
            "2026-11-26T10:00:00.123Z 127.0.0.1:50000 \"GET shop\\\"ex\\x09ample /cart?id=1 HTTP/1.1\" 502 0 11 12.345 - \
             shop canary 127.0.0.1:9001 rev=3 sticky retries=1 connect \"abc-1\" \"4bf92f3577b34da6a3ce929d0e0e4736\"\n"
        );
        assert_eq!(out.matches('\n').count(), 1, "a request cannot break the line");
    }

    #[test]
    fn the_host_is_the_uris_authority_else_the_host_header() {
        let mut record = sample();
        assert_eq!(record.host(), "shop.example");
        record.uri = Uri::from_static("https://other.example:8443/cart?id=1");
        assert_eq!((record.host(), record.path(), record.query()), ("other.example:8443", "/cart", Some("id=1")));
        record.uri = Uri::from_static("/");
        record.host_header = None;
        assert_eq!(record.host(), "");
        record.host_header = Some(HeaderValue::from_bytes(b"caf\xc3\xa9").expect("value"));
        assert_eq!(record.host(), "", "a host that is not text is left out");
    }

    #[test]
    fn failed_means_the_proxy_answered_or_a_5xx() {
        let mut record = sample();
        assert!(record.failed());
        record.failure = None;
        record.status = 503;
        assert!(record.failed());
        record.status = 404;
        assert!(!record.failed());
    }
}
