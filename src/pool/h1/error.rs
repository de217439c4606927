//! How an exchange on an inline connection fails, told apart as the
//! session's classification needs: nothing sent, closed before any answer,
//! broken mid-answer, malformed, or cut by a drain.

use std::io;

use crate::pool::failure::UpstreamFailure;

/// Why an exchange on an [`super::H1Conn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The request could not be written: the connection was already
    /// closed, and nothing of the request reached the backend.
    #[error("the connection to the backend was closed before the request was sent: {0}")]
    NotSent(#[source] io::Error),
    /// The request was written but the connection closed (or reset) before
    /// any of the answer came.
    #[error("the backend closed the connection without answering")]
    ClosedUnanswered(#[source] Option<io::Error>),
    /// The connection closed or failed part-way through the answer.
    #[error("the connection to the backend broke mid-response")]
    Broken(#[source] Option<io::Error>),
    /// The backend's answer is not valid HTTP/1.1.
    #[error("the backend sent a malformed response: {0}")]
    Malformed(&'static str),
    /// The backend's drain timed out and closed its connections.
    #[error("the backend's connections were closed when its drain timed out")]
    Cut,
}

impl H1Error {
    /// Whether the failure is the backend speaking bad HTTP (rather than
    /// its connection failing).
    pub fn is_protocol(&self) -> bool {
        matches!(self, H1Error::Malformed(_))
    }

    /// The kind of upstream failure it is.
    pub fn failure(&self) -> UpstreamFailure {
        if self.is_protocol() {
            UpstreamFailure::Protocol
        } else {
            UpstreamFailure::Reset
        }
    }
}
