//! The HTTP/1.1 client for plain-TCP backends, run in the request's own
//! task.
//!
//! hyper's client drives each connection from a task of its own: a request
//! travels there through a channel, its answer comes back through another,
//! and both are copied on the way. For the request that almost every
//! proxied request is — a head with no body — that machinery costs more
//! than the rest of the request path. So such a request is written to the
//! backend by its own future, which then parses
//! the response head with `httparse` and streams the response body itself,
//! straight from the connection's read buffer. Everything else (request
//! bodies, upgrades, TLS and HTTP/2 backends) goes through hyper's
//! client, on connections of its own: a plain backend keeps one idle list
//! of each kind (see [`crate::pool::Backend::checkout`]), so a POST never
//! turns an inline connection into a hyper one.
//!
//! The response is read as RFC 9112 §6.3 frames it: no body after `HEAD`,
//! 1xx, 204 and 304; `chunked` (extensions ignored, trailers passed on);
//! `Content-Length`; else until the backend closes. A connection goes back
//! to the pool only if the response ended cleanly, kept alive, and left no
//! stray bytes behind. Nobody reads an idle connection, so a backend that
//! closed it is noticed when it is next checked out: tokio has then seen
//! it readable, and a one-byte read tells end-of-stream from junk
//! ([`H1Conn::is_usable`]) — a connection that saw no event costs nothing
//! to check.
//!
//! By part: `conn` (the connection and the exchange of a head), `head`
//! (the response head's parse and framing), `body` (the response body),
//! `error`, and `props` (their invariants, for property tests and fuzzing).
//! A response head is parsed into a header map from hyper's per-thread
//! spares (`hyper::ext::take_header_map`), which an answered request's map
//! goes back to: one bounded set of maps per thread for hyper's heads and
//! the client's.

mod body;
mod conn;
mod error;
mod head;
pub(crate) mod props;
#[cfg(test)]
mod tests;

pub use body::H1Body;
pub use conn::{encode_head, CutSwitch, H1Conn};
pub use error::H1Error;
pub(super) use head::parse_lengths;
pub use head::H1Head;
