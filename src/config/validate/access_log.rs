//! `[access_log]` and the `[server]` keys on request IDs, trace context and
//! the pool header: where lines go, in which format, how many of them, and
//! which headers tie a request to its lines.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::super::raw::{RawAccessLog, RawServer};
use super::server::Server;
use super::values::{to_usize, Cx, Result};
use crate::access_log::{Destination, Format};
use crate::config::{AccessLogConfig, RequestHeaders};

/// The default queue: a few seconds of a busy proxy's lines, a few MB at most.
pub(super) const DEFAULT_QUEUE: i64 = 8192;
const MAX_QUEUE: i64 = 1_048_576;
/// How long a line may wait to be written, unless the config says: long
/// enough to batch a second of a quiet sidecar's lines into one write,
/// short enough for someone watching the file during a release.
pub(super) const DEFAULT_FLUSH: Duration = Duration::from_secs(1);
/// Beyond this, lines would be lost in a crash for no gain.
const MAX_FLUSH: Duration = Duration::from_secs(60);
/// Longer request IDs than this are no IDs but payloads.
const MAX_REQUEST_ID_LEN: i64 = 1024;

impl Cx<'_> {
    pub(super) fn access_log(&self, raw: Spanned<RawAccessLog>, server: &Server) -> Result<AccessLogConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let to = match &raw.to {
            None => {
                return Err(self.err(
                    span,
                    "access_log.to is missing; write \"stdout\", \"stderr\" or a file path, or remove [access_log]",
                ))
            }
            Some(v) => match v.get_ref().as_str() {
                "stdout" => Destination::Stdout,
                "stderr" => Destination::Stderr,
                _ => Destination::File(self.file_path(v, "access_log.to")?),
            },
        };
        let format = match raw.format.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "json")) => Format::Json,
            Some((_, "text")) => Format::Text,
            Some((v, other)) => {
                return Err(
                    self.err(v.span(), format!("access_log.format \"{other}\" is unknown; use \"json\" or \"text\""))
                )
            }
        };
        let sample = match &raw.sample {
            None => 1.0,
            Some(v) => {
                let share = *v.get_ref();
                if !(0.0..=1.0).contains(&share) {
                    return Err(self.err(
                        v.span(),
                        format!("access_log.sample is {share}; it must be from 0 to 1 (0.1 logs 10% of successful requests)"),
                    ));
                }
                share
            }
        };
        let queue = match &raw.queue {
            None => DEFAULT_QUEUE,
            Some(v) => self.int_in(v, "access_log.queue", 1, MAX_QUEUE)?,
        };
        let flush = match &raw.flush {
            None => DEFAULT_FLUSH,
            Some(v) => {
                let flush = self.duration(v, "access_log.flush", false)?;
                if flush > MAX_FLUSH {
                    return Err(
                        self.err(v.span(), format!("access_log.flush is {}; it must be at most 60s", v.get_ref().0))
                    );
                }
                flush
            }
        };
        let mut listeners: Vec<SocketAddr> = Vec::new();
        for item in raw.listeners.iter().flatten() {
            let addr = self.socket_addr(item, "access_log.listeners")?;
            if !server.traffic.contains(&addr) {
                return Err(self.err(
                    item.span(),
                    format!("access_log.listeners: {addr} is not a traffic listener; name one of [server] listen or [server.tls] listen"),
                ));
            }
            listeners.push(addr);
        }
        Ok(AccessLogConfig {
            to,
            format,
            sample,
            query: raw.query.unwrap_or(false),
            queue: to_usize(queue),
            flush,
            listeners,
        })
    }

    pub(super) fn request_headers(&self, raw: &RawServer) -> Result<RequestHeaders> {
        let defaults = RequestHeaders::default();
        let request_id = match &raw.request_id_header {
            None => defaults.request_id,
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => Some(self.server_header(v, "server.request_id_header")?),
        };
        let request_id_max_len = match &raw.request_id_max_len {
            None => defaults.request_id_max_len,
            Some(v) => to_usize(self.int_in(v, "server.request_id_max_len", 1, MAX_REQUEST_ID_LEN)?),
        };
        let pool_header = match &raw.pool_header {
            None => None,
            Some(v) => Some(self.server_header(v, "server.pool_header")?),
        };
        Ok(RequestHeaders {
            request_id,
            request_id_max_len,
            start_traces: raw.start_traces.unwrap_or(defaults.start_traces),
            pool_header,
        })
    }

    fn server_header(&self, v: &Spanned<String>, key: &str) -> Result<HeaderName> {
        HeaderName::from_bytes(v.get_ref().to_ascii_lowercase().as_bytes())
            .map_err(|_| self.err(v.span(), format!("{key} \"{}\" is not a valid header name", v.get_ref())))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn absent_means_off_and_request_ids_on() {
        let config = parse_ok(&with_server(""));
        assert_eq!(config.access_log, None);
        let config = parse_ok(&with_server("[access_log]\nto = \"stdout\"\n"));
        assert_eq!(config.access_log.map(|log| (log.queue, log.flush)), Some((8192, DEFAULT_FLUSH)));
        assert_eq!(config.server.requests, RequestHeaders::default());
    }

    #[test]
    fn every_key_is_read() {
        let config = parse_ok(&with_server(
            "[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\nrequest_id_header = \"X-Trace-Me\"\n\
             request_id_max_len = 64\nstart_traces = false\npool_header = \"X-Pool\"\n\
             [access_log]\nto = \"logs/access.log\"\nformat = \"text\"\nsample = 0.25\nquery = true\nqueue = 100\n\
             flush = \"250ms\"\nlisteners = [\"127.0.0.1:8081\"]\n",
        ));
        let log = config.access_log.expect("on");
        assert_eq!(log.to, Destination::File(Path::new("/etc/cutover/logs/access.log").to_path_buf()));
        assert_eq!(log.format, Format::Text);
        assert_eq!((log.sample, log.query, log.queue), (0.25, true, 100));
        assert_eq!(log.flush, Duration::from_millis(250));
        assert!(log.covers("127.0.0.1:8081".parse().unwrap()));
        assert!(!log.covers("127.0.0.1:8080".parse().unwrap()));
        let requests = config.server.requests;
        assert_eq!(requests.request_id.as_ref().map(HeaderName::as_str), Some("x-trace-me"));
        assert_eq!(requests.request_id_max_len, 64);
        assert!(!requests.start_traces);
        assert_eq!(requests.pool_header.as_ref().map(HeaderName::as_str), Some("x-pool"));
    }

    #[test]
    fn an_empty_request_id_header_turns_ids_off() {
        let config = parse_ok(&with_server("[server]\nrequest_id_header = \"\"\n"));
        assert_eq!(config.server.requests.request_id, None);
    }

    #[test]
    fn bad_values_point_at_themselves() {
        assert_err(&with_server("[access_log]\nformat = \"json\"\n"), "access_log.to is missing", (1, 1));
        assert_err(
            &with_server("[access_log]\nto = \"stdout\"\nformat = \"xml\"\n"),
            "use \"json\" or \"text\"",
            (3, 10),
        );
        assert_err(&with_server("[access_log]\nto = \"stdout\"\nsample = 1.5\n"), "from 0 to 1", (3, 10));
        assert_err(&with_server("[access_log]\nto = \"stdout\"\nqueue = 0\n"), "at least 1", (3, 9));
        assert_err(&with_server("[access_log]\nto = \"\"\n"), "access_log.to is empty", (2, 6));
        assert_err(&with_server("[access_log]\nto = \"stdout\"\nflush = \"0s\"\n"), "greater than zero", (3, 9));
        assert_err(&with_server("[access_log]\nto = \"stdout\"\nflush = \"2m\"\n"), "at most 60s", (3, 9));
        assert_err(
            &with_server("[access_log]\nto = \"stdout\"\nlisteners = [\"127.0.0.1:9\"]\n"),
            "not a traffic listener",
            (3, 14),
        );
        assert_err(&with_server("[server]\npool_header = \"x pool\"\n"), "not a valid header name", (2, 15));
        assert_err(&with_server("[server]\nrequest_id_max_len = 0\n"), "at least 1", (2, 22));
    }
}
