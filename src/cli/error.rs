//! How a command ends: its exit code, and the error behind one that did not
//! succeed. Shared by the client (which meets the failures) and the target
//! resolution (which meets the usage errors), so neither needs the other.

use http::StatusCode;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the proxy answered with a refusal (4xx, or 5xx).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the admin API could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line itself is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The proxy answered, and refused (exit 1).
    #[error("{status}: {message}")]
    Refused {
        /// The answer's status.
        status: StatusCode,
        /// Its `error`, or its body.
        message: String,
    },
    /// No answer from the admin API (exit 3).
    #[error("cannot reach the admin API at {base}: {reason}")]
    Unreachable {
        /// The URL tried.
        base: String,
        /// What went wrong.
        reason: String,
    },
}

impl CliError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Refused { .. } => EXIT_REFUSED,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
        }
    }
}
