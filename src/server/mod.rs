//! Traffic listeners: accept, serve HTTP/1.1 and HTTP/2 on one socket,
//! close idle and slow connections, stop on shutdown.
//!
//! Each accepted connection's protocol is known before hyper reads a byte:
//! over TLS from ALPN, in the clear from a `peek` at the first bytes
//! ([`sniff`]). hyper-util's `auto` builder would read the preface itself and
//! hand it back to hyper through a rewinding wrapper, so hyper's read buffer
//! would start with the preface in it and be reallocated on the first
//! request. Idle keep-alive connections, slow request heads and clients
//! that read nothing are closed by a per-connection [`watchdog`] rather than
//! hyper's HTTP/1 `header_read_timeout`: that timer also runs while a long
//! response is still being written, so it would cut downloads that outlive
//! it, and it does nothing for HTTP/2.
//!
//! Shutdown is a `watch` flag: listeners stop accepting, and every
//! connection is asked to finish gracefully (`Connection: close` on HTTP/1,
//! `GOAWAY` on HTTP/2) while its in-flight requests complete.
//!
//! The parts, each in its own file, and the direction they depend on each
//! other (none imports this file):
//!
//! - [`accept`]: the accept loop, one task per connection;
//! - [`connection`]: one connection's loop, serving it with hyper and acting
//!   on the watchdog's deadlines;
//! - [`serving`]: hyper serving a connection, and an idle HTTP/1.1
//!   connection parked with hyper's state freed until its next bytes;
//! - [`limits`]: [`ConnLimits`] and hyper's builders, with the HTTP/2 limits;
//! - [`sniff`]: HTTP/1.1 or the HTTP/2 preface, from a `peek`;
//! - [`preface`]: the HTTP/2 preface checked, and the GOAWAY that refuses
//!   an invalid one;
//! - [`request_line`]: a cleartext HTTP/1 connection's first line checked,
//!   refused as an invalid HTTP/2 preface when it is no HTTP/1.x request
//!   line either;
//! - [`watchdog`]: what a connection is doing, and when it is due to close;
//! - [`io`]: the byte stream wrapper that feeds the watchdog and the head scan;
//! - [`head_scan`]: the raw look at request heads that finds a body framed
//!   two ways;
//! - [`gated`]: a future polled only when it may have moved;
//! - [`props`]: the head scan's invariants, for property tests and fuzzing.

mod accept;
mod connection;
mod gated;
mod head_scan;
mod io;
mod limits;
mod preface;
pub(crate) mod props;
mod request_line;
mod serving;
mod sniff;
mod watchdog;

pub use accept::serve;
pub use limits::ConnLimits;
