//! One etcd endpoint, as an operator writes it (`http://10.0.0.5:2379`,
//! `https://etcd-0.etcd:2379`), checked once so a connection attempt never
//! meets a malformed address.

use std::fmt;

/// A parsed etcd client URL: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether the endpoint speaks TLS (`https://`).
    pub tls: bool,
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port (2379 when the URL names none).
    pub port: u16,
}

/// An endpoint URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("etcd endpoint {url:?}: {reason}")]
pub struct EndpointError {
    /// The URL as written.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// Parse `http://host[:port]` or `https://host[:port]`; a trailing `/`
    /// is accepted, any other path is not (the gateway lives at `/v3/`).
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let err = |reason| EndpointError { url: url.to_string(), reason };
        let uri: http::Uri = url.parse().map_err(|_| err("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err("the scheme must be http:// or https://")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(err("a path or query is not allowed; give scheme, host and port only"));
        }
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("credentials belong in username/password, not in the URL"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("no host"));
        }
        Ok(Endpoint { tls, host: host.to_string(), port: authority.port_u16().unwrap_or(2379) })
    }

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
