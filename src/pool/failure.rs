//! How an upstream failed, in the few kinds that the metrics, the guard and
//! passive health tell apart.
//!
//! Each upstream client classifies its own errors into these kinds where it
//! detects them (see [`super::h1::H1Error::failure`] and
//! [`UpstreamFailure::of_hyper`]), so nothing above the clients needs to
//! know a transport's error type.

/// How an upstream failed, as the `kind` label of
/// `cutover_upstream_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The TCP connect failed or timed out.
    Connect,
    /// No response within `request_timeout`.
    Timeout,
    /// The connection was closed or reset mid-exchange.
    Reset,
    /// The backend's answer was not valid HTTP.
    Protocol,
}

impl UpstreamFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Protocol => "protocol",
        }
    }

    /// Position in per-kind handle arrays (the order of the variants).
    pub fn index(self) -> usize {
        match self {
            UpstreamFailure::Connect => 0,
            UpstreamFailure::Timeout => 1,
            UpstreamFailure::Reset => 2,
            UpstreamFailure::Protocol => 3,
        }
    }

    /// Classify a hyper client error.
    pub fn of_hyper(err: &hyper::Error) -> UpstreamFailure {
        if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
            UpstreamFailure::Protocol
        } else if err.is_timeout() {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::Reset
        }
    }
}
