//! What can go wrong talking to etcd, said so that the caller can choose:
//! retry later (no endpoint answered, a timeout) or give up (a bad answer,
//! a refused request).
//!
//! A conflict of a conditional write is not an error here: it is an answer
//! (see [`super::CasOutcome`]), because the caller always handles it.

/// A failed etcd call.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached; `last` is the last endpoint's failure.
    #[error("no etcd endpoint answered (last: {last})")]
    Unreachable {
        /// Why the last endpoint tried could not be used.
        last: String,
    },
    /// The call took longer than the client's timeout.
    #[error("etcd call {path} timed out after {timeout:?}")]
    Timeout {
        /// The gateway path called.
        path: &'static str,
        /// The timeout in force.
        timeout: std::time::Duration,
    },
    /// etcd answered with an error (a gRPC status through the gateway).
    #[error("etcd refused {path}: {message} (gRPC code {code}, HTTP {status})")]
    Server {
        /// The gateway path called.
        path: &'static str,
        /// The HTTP status of the answer.
        status: u16,
        /// The gRPC status code (5 not found, 11 out of range, 16 unauthenticated, ...).
        code: i64,
        /// etcd's message, e.g. `etcdserver: requested lease not found`.
        message: String,
    },
    /// The answer is not what the gateway documents (bad JSON, bad base64).
    #[error("unexpected answer from etcd {path}: {message}")]
    Decode {
        /// The gateway path called.
        path: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The client cannot be built or used as configured.
    #[error("etcd client setup: {0}")]
    Setup(String),
}

impl EtcdError {
    /// Whether another endpoint, or a later try, may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. } => true,
            EtcdError::Server { code, .. } => *code == GRPC_UNAVAILABLE,
            _ => false,
        }
    }

    /// Whether etcd rejected the auth token (expired or unknown): the
    /// client authenticates again and retries once.
    pub(crate) fn is_bad_token(&self) -> bool {
        matches!(self, EtcdError::Server { code, message, .. }
            if *code == GRPC_UNAUTHENTICATED || message.contains("auth token"))
    }
}

/// gRPC status code UNAVAILABLE (no leader, shutting down).
pub(crate) const GRPC_UNAVAILABLE: i64 = 14;
/// gRPC status code UNAUTHENTICATED.
pub(crate) const GRPC_UNAUTHENTICATED: i64 = 16;
