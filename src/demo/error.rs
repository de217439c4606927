//! Why the demo could not run; the binary prints it and exits 1.

use std::net::SocketAddr;
use std::path::PathBuf;

use cutover::config::ConfigError;

/// Why the demo could not run; the binary prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temp directory for the config could not be made.
    #[error("cannot create the demo directory {path}: {source}")]
    TempDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file could not be written.
    #[error("cannot write the demo config {path}: {source}")]
    WriteConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The generated config did not validate (a bug in the demo).
    #[error("the demo config is invalid: {0}")]
    Config(ConfigError),
    /// A demo upstream or the proxy could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The proxy stopped answering or answered nonsense mid-run.
    #[error("{0}")]
    Story(String),
}
