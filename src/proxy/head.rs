//! The checks and rewrites of a request head that do not depend on the
//! route: framing and size limits, the request's host, the origin-form
//! target, and which methods may reach a backend twice.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Uri, Version};

use crate::error::ProxyError;

/// Reject what must never be forwarded: ambiguous framing and oversized heads.
pub(super) fn check_framing(parts: &Parts, max_header_bytes: usize) -> Result<(), ProxyError> {
    // One pass for the size, noting on the way whether there is any framing
    // to look at (most requests have neither header, and no lookup follows).
    let (mut head_bytes, mut te, mut cl) = (parts.uri.to_string_len_hint(), false, false);
    for (name, value) in &parts.headers {
        head_bytes += name.as_str().len() + value.len() + 4;
        te |= name == header::TRANSFER_ENCODING;
        cl |= name == header::CONTENT_LENGTH;
    }
    if head_bytes > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    // hyper decodes `chunked` only; forwarding a body still in another
    // transfer coding would hand the backend bytes it did not ask for.
    let other_coding = te
        && parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .any(|coding| !coding.trim().eq_ignore_ascii_case("chunked"));
    if other_coding {
        return Err(ProxyError::NotImplemented);
    }
    // `Content-Length` with `Transfer-Encoding` never gets here: hyper's
    // HTTP/1.1 parser drops the length (and `server`'s head scan answers
    // the `400`), and HTTP/2 refuses `Transfer-Encoding` as a
    // connection-specific field (RFC 9113 §8.2.2).
    if cl {
        let mut lengths = parts.headers.get_all(header::CONTENT_LENGTH).iter();
        let first = lengths.next();
        if lengths.any(|other| Some(other) != first) {
            return Err(ProxyError::BadRequest("conflicting content-length\n"));
        }
    }
    Ok(())
}

/// The request's host: the `Host` header, or the URI's authority (HTTP/2's
/// `:authority`, or an absolute-form HTTP/1.1 target, which wins per RFC 9112
/// §3.2.2). HTTP/1.1 without any, or with two `Host` headers, is malformed.
pub(super) fn request_host(parts: &Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one host header\n"));
    }
    if let Some(authority) = parts.uri.authority() {
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    match first {
        Some(host) => Ok(Some(host.clone())),
        None if parts.version == Version::HTTP_11 => Err(ProxyError::BadRequest("missing host header\n")),
        None => Ok(None),
    }
}

/// The URI as an HTTP/1.1 origin-form target (`/path?query`).
pub(super) fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Cheap length of a URI for the header-size check.
trait UriLen {
    fn to_string_len_hint(&self) -> usize;
}

impl UriLen for Uri {
    fn to_string_len_hint(&self) -> usize {
        self.path_and_query().map_or(1, |pq| pq.as_str().len()) + self.authority().map_or(0, |a| a.as_str().len())
    }
}
