//! gRPC answers judged by their `grpc-status`, not their HTTP status.
//!
//! A gRPC call that fails is still an HTTP `200`: its status code travels in
//! the `grpc-status` trailer, or in the headers of a "trailers-only" answer
//! that has no body. Counting such answers by their HTTP status alone would
//! call a backend failing every call healthy, so an answer whose
//! `content-type` is `application/grpc` (or `application/grpc+…`) is judged
//! by its `grpc-status` instead: a code in the pool's [`GrpcCodes`] is the
//! backend's failure (for the guard, the judge, the status class of
//! `cutover_requests_total` and passive health), any other code a success.
//! By default the failures are the codes a server gives when it, not the
//! caller, is at fault — as Linkerd and Envoy classify them: `UNKNOWN`,
//! `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`.
//!
//! The check costs one header lookup per answer and allocates nothing; an
//! answer that is not gRPC is judged as before. gRPC-Web (`application/
//! grpc-web`) carries its trailers inside the body and is not read here.

use http::header::{HeaderMap, CONTENT_TYPE};

/// The header or trailer carrying a gRPC call's status code.
pub const GRPC_STATUS: &str = "grpc-status";

/// The names of the gRPC status codes, indexed by code (0 to 16).
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `UNKNOWN`: also the code of a gRPC answer that ended without any
/// `grpc-status`, as a gRPC client reports such a call.
pub const UNKNOWN: u8 = 2;

/// A set of gRPC status codes: the ones that count as a backend's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// No code counts as a failure.
    pub const NONE: GrpcCodes = GrpcCodes(0);

    /// The server-side codes: `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4),
    /// `INTERNAL` (13), `UNAVAILABLE` (14) and `DATA_LOSS` (15).
    pub const SERVER: GrpcCodes = GrpcCodes(1 << 2 | 1 << 4 | 1 << 13 | 1 << 14 | 1 << 15);

    /// The same set with `code` in it (codes past 16 are ignored).
    pub const fn with(self, code: u8) -> GrpcCodes {
        if code as usize >= NAMES.len() {
            return self;
        }
        GrpcCodes(self.0 | 1 << code)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: u8) -> bool {
        (code as usize) < NAMES.len() && self.0 & (1 << code) != 0
    }

    /// The code named `name` (`"INTERNAL"`, any case), if it is one.
    pub fn code_of(name: &str) -> Option<u8> {
        NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)).and_then(|i| u8::try_from(i).ok())
    }

    /// The names of the codes in the set, in code order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES.iter().enumerate().filter(move |(i, _)| self.0 & (1 << i) != 0).map(|(_, n)| *n)
    }
}

impl Default for GrpcCodes {
    fn default() -> GrpcCodes {
        GrpcCodes::SERVER
    }
}

/// Whether an answer with `headers` is a gRPC answer: `content-type` is
/// `application/grpc`, alone or with a `+format` or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else { return false };
    let value = value.as_bytes();
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// The `grpc-status` in `headers` (trailers, or a trailers-only answer's
/// headers): `None` when there is none. A value that is not a number from
/// 0 to 255 reads as `UNKNOWN`, as a gRPC client reads it.
pub fn status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(GRPC_STATUS)?;
    let text = std::str::from_utf8(value.as_bytes()).ok();
    Some(text.and_then(|t| t.trim().parse::<u8>().ok()).unwrap_or(UNKNOWN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_server_side_codes_are_the_default_failures() {
        let failing: Vec<_> = GrpcCodes::default().names().collect();
        assert_eq!(failing, ["UNKNOWN", "DEADLINE_EXCEEDED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]);
        for ok in [0, 1, 3, 5, 7, 12, 16] {
            assert!(!GrpcCodes::SERVER.contains(ok), "code {ok}");
        }
        assert!(!GrpcCodes::SERVER.contains(40));
    }

    #[test]
    fn codes_are_named_in_any_case() {
        assert_eq!(GrpcCodes::code_of("internal"), Some(13));
        assert_eq!(GrpcCodes::code_of("UNAUTHENTICATED"), Some(16));
        assert_eq!(GrpcCodes::code_of("BROKEN"), None);
        let set = GrpcCodes::NONE.with(8).with(99);
        assert_eq!(set.names().collect::<Vec<_>>(), ["RESOURCE_EXHAUSTED"]);
    }

    #[test]
    fn grpc_answers_are_told_by_their_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[("content-type", "application/grpc+proto")])));
        assert!(is_grpc(&headers(&[("content-type", "Application/GRPC; charset=x")])));
        assert!(!is_grpc(&headers(&[("content-type", "application/grpc-web")])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&headers(&[])));
    }

    #[test]
    fn the_status_is_read_and_a_garbled_one_is_unknown() {
        assert_eq!(status(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(status(&headers(&[("grpc-status", "0")])), Some(0));
        assert_eq!(status(&headers(&[("grpc-status", "oops")])), Some(UNKNOWN));
        assert_eq!(status(&headers(&[])), None);
    }
}
