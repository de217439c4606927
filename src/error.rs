//! Why a request did not get a backend's answer, and what the client sees.
//!
//! Every failure carries its [`Source`]: the upstream (a backend refused,
//! reset, timed out or spoke garbage), the downstream (the client sent
//! something malformed or went away) or the proxy itself. Only upstream
//! failures count against a pool's guard — a client hanging up is not a
//! backend's fault — so the tag is set where the failure is detected, never
//! guessed later from a status code.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
pub use crate::pool::UpstreamFailure;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A backend.
    Upstream,
    /// The client.
    Downstream,
    /// The proxy's own state (no route, no backend).
    Internal,
}

/// A request the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The request is malformed (400), with the reason.
    BadRequest(&'static str),
    /// The client stopped sending its request body (408).
    RequestTimeout,
    /// A transfer coding the proxy does not implement (501).
    NotImplemented,
    /// The request head is over `max_request_header_bytes` (431).
    HeadersTooLarge,
    /// No route matches (404).
    NoRoute,
    /// The route has no pool or backend that can serve (503).
    NoBackend,
    /// The upstream failed (502, or 504 for a timeout).
    Upstream(UpstreamFailure),
}

impl ProxyError {
    /// Who caused it.
    pub fn source(self) -> Source {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge
            | ProxyError::RequestTimeout
            | ProxyError::NotImplemented => Source::Downstream,
            ProxyError::NoRoute | ProxyError::NoBackend => Source::Internal,
            ProxyError::Upstream(_) => Source::Upstream,
        }
    }

    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(UpstreamFailure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn body(self) -> &'static str {
        match self {
            ProxyError::BadRequest(reason) => reason,
            ProxyError::RequestTimeout => "request body not received in time\n",
            ProxyError::NotImplemented => "transfer coding not supported\n",
            ProxyError::HeadersTooLarge => "request headers too large\n",
            ProxyError::NoRoute => "no route for this request\n",
            ProxyError::NoBackend => "no backend available\n",
            ProxyError::Upstream(UpstreamFailure::Timeout) => "upstream timed out\n",
            ProxyError::Upstream(UpstreamFailure::Connect) => "upstream connection failed\n",
            ProxyError::Upstream(_) => "upstream error\n",
        }
    }

    /// The short plain-text response. Malformed requests also close the
    /// connection: after a framing error the rest of the stream cannot be
    /// trusted.
    pub fn response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::full(Bytes::from_static(self.body().as_bytes())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if matches!(self, ProxyError::BadRequest(_) | ProxyError::RequestTimeout | ProxyError::NotImplemented) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
