//! One etcd endpoint, as an operator writes it (`http://10.0.0.5:2379`,
//! `https://etcd-0.etcd:2379`), checked once so a connection attempt never
//! meets a malformed address. The type and its parsing belong to the
//! `[fleet]` section's types (`crate::config::fleet`); this is what the
//! client needs of it.

use std::fmt;

pub use crate::config::fleet::{Endpoint, EndpointError};

impl Endpoint {
    /// The `Host` header value.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", if self.tls { "https" } else { "http" }, self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_write() {
        let e = Endpoint::parse("http://127.0.0.1:2379").expect("valid");
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 2379));
        let e = Endpoint::parse("https://etcd-0.etcd/").expect("valid");
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "etcd-0.etcd", 2379));
        let e = Endpoint::parse("http://[::1]:23790").expect("valid");
        assert_eq!((e.host.as_str(), e.authority().as_str()), ("::1", "[::1]:23790"));
        assert_eq!(e.to_string(), "http://[::1]:23790");
    }

    #[test]
    fn rejects_what_cannot_work() {
        for bad in ["127.0.0.1:2379", "ftp://x:1", "http://x:1/v3", "http://u:p@x:1", "http://", "nonsense"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
