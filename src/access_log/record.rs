//! One access-log record and its two line formats.
//!
//! A record owns its strings so that it can cross to the writer thread;
//! formatting (JSON escaping, the timestamp) happens there, off the request
//! path. The JSON field names are the documented interface of the log and
//! do not change lightly: log shippers and queries depend on them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::timestamp::rfc3339_millis;

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
    fn as_str(self) -> &'static str {
        match self {
            Choice::Forced => "forced",
            Choice::Sticky => "sticky",
            Choice::Weighted => "weighted",
        }
    }
}

/// One finished request (or closed tunnel).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Request or tunnel.
    pub kind: Kind,
    /// When the request's head arrived.
    pub time: SystemTime,
    /// The client's address as the proxy saw it.
    pub client: SocketAddr,
    /// The request method.
    pub method: String,
    /// The `Host` (or `:authority`) the client asked for, empty if none.
    pub host: String,
    /// The path, without the query.
    pub path: String,
    /// The query, when the log is set to keep queries.
    pub query: Option<String>,
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
    pub route: Option<String>,
    /// The pool chosen, if any.
    pub pool: Option<String>,
    /// The backend that served it (`host:port`), if one was reached.
    pub backend: Option<String>,
    /// The config revision of the snapshot that served it.
    pub revision: u64,
    /// How the pool was chosen.
    pub choice: Option<Choice>,
    /// How many times the request was sent again (to the same or another backend).
    pub retries: u32,
    /// Why the proxy answered itself (`connect`, `timeout`, `reset`, …), if it did.
    pub failure: Option<&'static str>,
    /// The request ID, as passed to the backend.
    pub request_id: Option<String>,
    /// The W3C trace ID (32 hex digits), as passed to the backend.
    pub trace_id: Option<String>,
}

impl Record {
    /// Whether the request counts as failed for sampling: the proxy answered
    /// itself, or the answer is a 5xx.
    pub fn failed(&self) -> bool {
        self.failure.is_some() || self.status >= 500
    }

    /// Append this record as one line (with its `\n`) to `out`.
    pub fn write_line(&self, format: Format, out: &mut String) {
        match format {
            Format::Json => self.write_json(out),
            Format::Text => self.write_text(out),
        }
        out.push('\n');
    }

    fn write_json(&self, out: &mut String) {
        #[derive(Serialize)]
        struct Line<'a> {
            time: &'a str,
            kind: Kind,
            client: String,
            method: &'a str,
            host: &'a str,
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            query: Option<&'a str>,
            protocol: &'a str,
            status: u16,
            bytes_in: u64,
            bytes_out: u64,
            duration_ms: f64,
            upstream_ttfb_ms: Option<f64>,
            route: Option<&'a str>,
            pool: Option<&'a str>,
            backend: Option<&'a str>,
            revision: u64,
            choice: Option<Choice>,
            retries: u32,
            failure: Option<&'a str>,
            request_id: Option<&'a str>,
            trace_id: Option<&'a str>,
        }
        let time = rfc3339_millis(self.time);
        let line = Line {
            time: &time,
            kind: self.kind,
            client: self.client.to_string(),
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            protocol: self.protocol,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: millis(self.duration),
            upstream_ttfb_ms: self.upstream_ttfb.map(millis),
            route: self.route.as_deref(),
            pool: self.pool.as_deref(),
            backend: self.backend.as_deref(),
            revision: self.revision,
            choice: self.choice,
            retries: self.retries,
            failure: self.failure,
            request_id: self.request_id.as_deref(),
            trace_id: self.trace_id.as_deref(),
        };
        // Serializing plain strings and numbers cannot fail.
        if let Ok(json) = serde_json::to_string(&line) {
            out.push_str(&json);
        }
    }

    /// `time client "METHOD host path?query PROTO" status in out duration ttfb
    /// route pool backend rev choice retries failure request_id trace_id`,
    /// with `-` for what is absent. Values that come from the request are
    /// quoted and escaped, so a line always splits the same way.
    fn write_text(&self, out: &mut String) {
        let _ = write!(out, "{} {} \"", rfc3339_millis(self.time), self.client);
        escape_text(&self.method, out);
        out.push(' ');
        escape_text(&self.host, out);
        out.push(' ');
        escape_text(&self.path, out);
        if let Some(query) = &self.query {
            out.push('?');
            escape_text(query, out);
        }
        let _ = write!(
            out,
            " {}\" {} {} {} {:.3} ",
            self.protocol,
            self.status,
            self.bytes_in,
            self.bytes_out,
            millis(self.duration)
        );
        match self.upstream_ttfb {
            Some(ttfb) => {
                let _ = write!(out, "{:.3}", millis(ttfb));
            }
            None => out.push('-'),
        }
        for value in [self.route.as_deref(), self.pool.as_deref(), self.backend.as_deref()] {
            out.push(' ');
            out.push_str(value.unwrap_or("-"));
        }
        let _ = write!(
            out,
            " rev={} {} retries={} {}",
            self.revision,
            self.choice.map_or("-", Choice::as_str),
            self.retries,
            self.failure.unwrap_or("-")
        );
        for value in [self.request_id.as_deref(), self.trace_id.as_deref()] {
            out.push(' ');
            match value {
                Some(value) => {
                    out.push('"');
                    escape_text(value, out);
                    out.push('"');
                }
                None => out.push('-'),
            }
        }
        if self.kind == Kind::Tunnel {
            out.push_str(" tunnel");
        }
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Escape `"`, `\` and control bytes, so a client cannot forge a line or a field.
fn escape_text(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        Record {
            kind: Kind::Request,
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_687_200_123),
            client: "127.0.0.1:50000".parse().expect("addr"),
            method: "GET".into(),
            host: "shop.example".into(),
            path: "/cart".into(),
            query: Some("id=1".into()),
            protocol: "HTTP/1.1",
            status: 502,
            bytes_in: 0,
            bytes_out: 11,
            duration: Duration::from_micros(12_345),
            upstream_ttfb: None,
            route: Some("shop".into()),
            pool: Some("canary".into()),
            backend: Some("127.0.0.1:9001".into()),
            revision: 3,
            choice: Some(Choice::Sticky),
            retries: 1,
            failure: Some("connect"),
            request_id: Some("abc-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        }
    }

    #[test]
    fn json_line_has_every_field() {
        let mut out = String::new();
        sample().write_line(Format::Json, &mut out);
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
    fn json_leaves_out_a_query_that_is_not_kept() {
        let mut record = sample();
        record.query = None;
        let mut out = String::new();
        record.write_line(Format::Json, &mut out);
        let value: serde_json::Value = serde_json::from_str(out.trim_end()).expect("json");
        assert!(value.get("query").is_none());
    }

    #[test]
    fn text_line_is_fixed_and_escaped() {
        let mut record = sample();
        record.path = "/a\"b\nc".into();
        let mut out = String::new();
        record.write_line(Format::Text, &mut out);
        assert_eq!(
            out,
            "2026-11-26T10:00:00.123Z 127.0.0.1:50000 \"GET shop.example /a\\\"b\\x0ac?id=1 HTTP/1.1\" 502 0 11 12.345 - \
             shop canary 127.0.0.1:9001 rev=3 sticky retries=1 connect \"abc-1\" \"4bf92f3577b34da6a3ce929d0e0e4736\"\n"
        );
        assert_eq!(out.matches('\n').count(), 1, "a request cannot break the line");
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
