//! Header rewriting between client and backend.
//!
//! Hop-by-hop headers describe one connection, not the message, so they are
//! removed in both directions (RFC 9110 §7.6.1): the fixed list below plus
//! every header the `Connection` header names. `Proxy-Authorization` and
//! `Proxy-Authenticate` are credentials for *this* proxy and never travel on.
//! `TE: trailers` is kept, since gRPC over HTTP/2 depends on it. `Trailer`
//! is not on the list: RFC 2616 named it hop-by-hop, RFC 9110 does not, and
//! it must travel, since an HTTP/1.1 peer sends only the trailer fields the
//! `Trailer` field announced (hyper's server and client both do this).
//!
//! A `Content-Length` beside `Transfer-Encoding` goes with it: the coding
//! frames the message (RFC 9112 §6.3), and the next hop gets it re-framed.
//!
//! `X-Forwarded-For` is appended to (earlier proxies' entries are kept; the
//! client's own address is added), while `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set by the proxy from what it saw and replace any
//! value the client sent: a client could otherwise claim HTTPS or another
//! host to the backend.
//!
//! Request header names containing `_` are dropped unless the config allows
//! them (nginx's `underscores_in_headers off`, for the same reason): CGI,
//! WSGI, PHP and Rack backends map `-` and `_` alike to `HTTP_X_FORWARDED_FOR`,
//! so a client's `X_Forwarded_For` beside the proxy's own `X-Forwarded-For`
//! would let it spoof what the proxy vouches for.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`); `Connection` must stay first.
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `Transfer-Encoding` is in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_AT: usize = 6;

/// Whether `name` (in any case) is one of the fixed hop-by-hop fields.
pub fn is_fixed_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_str().as_bytes()))
}

/// Remove hop-by-hop headers, including those named by `Connection`.
/// `TE` survives when it is exactly `trailers`. Says whether `Connection`
/// named any header beyond the fixed ones (which may then be gone).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the (few) header names finds which fixed hop-by-hop
    // headers are present; only those are removed. Most messages carry none,
    // or only `Connection: keep-alive` (every nginx response does), and a
    // hash lookup per fixed name per message adds up.
    let mut present = 0u16;
    // Whether every `Connection` value is a bare `keep-alive` or `close`,
    // which name nothing else to remove: then the header list need not be
    // parsed.
    let mut connection_plain = true;
    for (name, value) in headers.iter() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << at;
            if at == 0 {
                let v = value.as_bytes();
                connection_plain &= v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close");
            }
        }
    }
    if present == 0 {
        return false;
    }
    if present == 1 && connection_plain {
        headers.remove(header::CONNECTION);
        return false;
    }
    // A message framed by a transfer coding has no meaningful length: the
    // coding overrides `Content-Length`, and a proxy removes the length
    // before forwarding (RFC 9112 §6.3). Left in, it would frame the
    // re-encoded body for the next hop and cut it short.
    if present & (1 << TRANSFER_ENCODING_AT) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Headers named by `Connection` go too. The fixed names (`keep-alive`
    // above all) are handled by the bit set; anything else is rare, so only
    // then is a list allocated.
    let mut named: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        for value in headers.get_all(header::CONNECTION) {
            // By bytes: a value with an obs-text byte somewhere still names
            // the headers of its other tokens.
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || is_fixed_hop_by_hop(token) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
    }
    let named_any = !named.is_empty();
    for name in named {
        headers.remove(name);
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << at) == 0 {
            continue;
        }
        let trailers = *name == header::TE
            && headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers {
            headers.remove(name);
        }
    }
    named_any
}

/// Remove every header whose name contains `_`; returns how many names
/// went. Each is logged at debug level: a backend that needs one is
/// diagnosed from the log, and `allow_underscores_in_headers` lets it pass.
pub fn drop_underscored(headers: &mut HeaderMap) -> u64 {
    let underscored = |name: &HeaderName| name.as_str().as_bytes().contains(&b'_');
    // One pass over the (few) names; nothing is allocated in the usual case.
    if !headers.keys().any(underscored) {
        return 0;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|name| underscored(name)).cloned().collect();
    for name in &names {
        tracing::debug!(header = name.as_str(), "request header dropped: its name contains an underscore");
        headers.remove(name);
    }
    names.len() as u64
}

/// Set the `X-Forwarded-*` headers for a request from `client_ip` that
/// arrived over `proto` for `host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &HeaderValue,
    host: Option<&HeaderValue>,
) {
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(slot) => {
            slot.insert(client_ip.clone());
        }
        header::Entry::Occupied(mut slot) => {
            let mut joined: Vec<u8> = Vec::with_capacity(64);
            for value in slot.iter() {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                slot.insert(value);
            }
        }
    }
    headers.insert(&X_FORWARDED_PROTO, proto.clone());
    match host {
        Some(host) => {
            headers.insert(&X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn strips_fixed_and_named_hop_by_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic abc"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        assert!(strip_hop_by_hop(&mut h), "x-secret is named by connection");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_bare_connection_value_is_removed_and_a_second_one_still_read() {
        let mut h = map(&[("connection", "Keep-Alive"), ("x-kept", "yes")]);
        assert!(!strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1, "{h:?}");

        let mut h = map(&[("connection", "close"), ("connection", "x-secret"), ("x-secret", "1"), ("x-kept", "yes")]);
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_connection_value_with_obs_text_still_names_its_other_headers() {
        let mut h = map(&[("x-secret", "1"), ("x-kept", "yes")]);
        let value = HeaderValue::from_bytes(b"x-secret, caf\xe9").expect("obs-text is a valid value");
        h.insert(header::CONNECTION, value);
        assert!(strip_hop_by_hop(&mut h), "x-secret is named by connection");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_transfer_coding_takes_the_content_length_with_it() {
        assert_eq!(HOP_BY_HOP[TRANSFER_ENCODING_AT], header::TRANSFER_ENCODING);
        let mut h = map(&[("content-length", "3"), ("transfer-encoding", "chunked"), ("x-kept", "yes")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[("content-length", "3"), ("connection", "keep-alive")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "trailers"), ("connection", "keep-alive")]);
        assert!(!strip_hop_by_hop(&mut h), "connection names no header beyond the fixed ones");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn underscored_names_are_dropped_and_counted() {
        let mut h = map(&[("x_forwarded_for", "6.6.6.6"), ("x_a", "1"), ("x_a", "2"), ("x-kept", "yes")]);
        assert_eq!(drop_underscored(&mut h), 2);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(drop_underscored(&mut h), 0);
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_host_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let ip = HeaderValue::from_static("127.0.0.1");
        let proto = HeaderValue::from_static("http");
        let host = HeaderValue::from_static("shop.example.com");
        set_forwarded(&mut h, &ip, &proto, Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example.com");
    }
}
