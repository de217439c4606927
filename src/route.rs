//! Route matching: which route a request's `Host` and path select.
//!
//! The rules are SPEC §2's, pinned so that operators can predict them: host
//! matching ignores case and any `:port`; `*.example.com` matches any depth of
//! subdomain but not `example.com` itself; a path prefix matches whole
//! segments (`/v2` matches `/v2` and `/v2/x`, not `/v2x`) unless it ends in
//! `/`. The most specific host wins (exact, then the longest wildcard, then
//! any host), then the longest prefix.
//!
//! The table is built once per snapshot and pre-sorted by specificity, so a
//! lookup is one hash probe for exact hosts plus a short scan, with no
//! allocation for hosts of ordinary length.

use std::collections::HashMap;

use crate::config::HostMatch;

/// A host-and-path index over route positions `0..n`.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Exact host → candidate routes, longest prefix first.
    exact: HashMap<Box<str>, Vec<Candidate>>,
    /// Wildcard suffixes, longest suffix first, then longest prefix.
    wildcard: Vec<(Box<str>, Candidate)>,
    /// Routes for any host, longest prefix first.
    any: Vec<Candidate>,
}

#[derive(Debug, Clone)]
struct Candidate {
    prefix: Box<str>,
    route: usize,
}

impl Candidate {
    fn matches(&self, path: &str) -> bool {
        path_matches(&self.prefix, path)
    }
}

/// Whether `prefix` matches `path` on whole segments.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl RouteTable {
    /// Index routes given as `(host, path_prefix)` in route order.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a HostMatch, &'a str)>) -> Self {
        let mut table = RouteTable::default();
        for (route, (host, prefix)) in routes.into_iter().enumerate() {
            let candidate = Candidate { prefix: prefix.into(), route };
            match host {
                HostMatch::Any => table.any.push(candidate),
                HostMatch::Exact(name) => {
                    table.exact.entry(name.to_ascii_lowercase().into_boxed_str()).or_default().push(candidate)
                }
                HostMatch::Wildcard(suffix) => {
                    table.wildcard.push((suffix.to_ascii_lowercase().into_boxed_str(), candidate))
                }
            }
        }
        let by_prefix = |a: &Candidate, b: &Candidate| b.prefix.len().cmp(&a.prefix.len());
        for list in table.exact.values_mut() {
            list.sort_by(by_prefix);
        }
        table.any.sort_by(by_prefix);
        table.wildcard.sort_by(|(sa, a), (sb, b)| sb.len().cmp(&sa.len()).then_with(|| by_prefix(a, b)));
        table
    }

    /// The route position for `host` (as sent, maybe with port and any case)
    /// and `path`, or `None` for "404 from the proxy".
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        // A sidecar's routes usually name no host: then the host is not
        // even looked at.
        let by_host = !self.exact.is_empty() || !self.wildcard.is_empty();
        if let Some(host) = host.filter(|_| by_host).map(strip_port).filter(|h| !h.is_empty()) {
            let mut buf = [0u8; 256];
            let lowered: Option<&str> = if host.len() <= buf.len() {
                let bytes = &mut buf[..host.len()];
                bytes.copy_from_slice(host.as_bytes());
                bytes.make_ascii_lowercase();
                std::str::from_utf8(bytes).ok()
            } else {
                None
            };
            let owned;
            let host = match lowered {
                Some(h) => h,
                None => {
                    owned = host.to_ascii_lowercase();
                    owned.as_str()
                }
            };
            if let Some(list) = self.exact.get(host) {
                if let Some(c) = list.iter().find(|c| c.matches(path)) {
                    return Some(c.route);
                }
            }
            for (suffix, c) in &self.wildcard {
                if host.len() > suffix.len() && host.ends_with(&**suffix) && c.matches(path) {
                    return Some(c.route);
                }
            }
        }
        self.any.iter().find(|c| c.matches(path)).map(|c| c.route)
    }
}

/// `Host` without its `:port`, IPv6 literals kept whole (`[::1]:80` → `[::1]`).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(HostMatch, &str)]) -> RouteTable {
        RouteTable::new(routes.iter().map(|(h, p)| (h, *p)))
    }

    fn exact(h: &str) -> HostMatch {
        HostMatch::Exact(h.into())
    }

    fn wild(suffix: &str) -> HostMatch {
        HostMatch::Wildcard(suffix.into())
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_matches("/v2", "/v2"));
        assert!(path_matches("/v2", "/v2/x"));
        assert!(!path_matches("/v2", "/v2x"));
        assert!(path_matches("/v2/", "/v2/x"));
        assert!(!path_matches("/v2/", "/v2"));
        assert!(path_matches("/", "/anything"));
    }

    #[test]
    fn host_ignores_case_and_port() {
        let t = table(&[(exact("shop.example.com"), "/")]);
        assert_eq!(t.find(Some("SHOP.Example.com:8080"), "/"), Some(0));
        assert_eq!(t.find(Some("other.example.com"), "/"), None);
        assert_eq!(t.find(None, "/"), None);
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_apex() {
        let t = table(&[(wild(".example.com"), "/")]);
        assert_eq!(t.find(Some("a.example.com"), "/"), Some(0));
        assert_eq!(t.find(Some("a.b.example.com"), "/"), Some(0));
        assert_eq!(t.find(Some("example.com"), "/"), None);
        assert_eq!(t.find(Some("badexample.com"), "/"), None);
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let t = table(&[
            (HostMatch::Any, "/"),
            (wild(".example.com"), "/"),
            (wild(".b.example.com"), "/"),
            (exact("a.b.example.com"), "/"),
            (exact("a.b.example.com"), "/api"),
            (HostMatch::Any, "/api"),
        ]);
        assert_eq!(t.find(Some("a.b.example.com"), "/api/x"), Some(4));
        assert_eq!(t.find(Some("a.b.example.com"), "/x"), Some(3));
        assert_eq!(t.find(Some("c.b.example.com"), "/api"), Some(2));
        assert_eq!(t.find(Some("c.example.com"), "/"), Some(1));
        assert_eq!(t.find(Some("elsewhere"), "/api"), Some(5));
        assert_eq!(t.find(Some("elsewhere"), "/apix"), Some(0));
    }

    #[test]
    fn exact_host_without_matching_prefix_falls_through() {
        let t = table(&[(exact("a.com"), "/admin"), (HostMatch::Any, "/")]);
        assert_eq!(t.find(Some("a.com"), "/shop"), Some(1));
    }

    #[test]
    fn ports_and_ipv6_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn very_long_hosts_still_match() {
        let long = format!("{}.example.com", "a".repeat(300));
        let t = table(&[(wild(".example.com"), "/")]);
        assert_eq!(t.find(Some(&long.to_uppercase()), "/"), Some(0));
    }
}
