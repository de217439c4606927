//! The limits every downstream connection is served under: the timeouts of
//! [`ConnLimits`], and hyper's two connection builders set up once per
//! listener, with the HTTP/2 limits that bound the work one client can
//! cause (parallel streams, provoked resets, buffered response bytes).

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Limits applied to every downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Close a connection with no request in flight after this long.
    pub idle_timeout: Duration,
    /// Largest request head; hyper's read buffer is sized from it.
    pub max_request_header_bytes: usize,
    /// Deadline for a request head, from its first byte.
    pub header_read_timeout: Duration,
    /// Longest a response write may wait on a client that reads nothing.
    pub send_timeout: Duration,
}

/// HTTP/2 streams one client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams a client may reset before being accepted, before GOAWAY.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the proxy may reset because of a client's errors, before GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 256;
/// Response bytes hyper may hold per HTTP/2 stream that the client's
/// flow-control window has not let out yet, below hyper's default. Past it
/// the stream stops reading its backend, so this bounds what a client that
/// opens no window pins (this times [`H2_MAX_CONCURRENT_STREAMS`] per
/// connection), and only for `send_timeout`. Much smaller buffers cost a
/// fast download throughput in extra wake-ups; this size does not.
const H2_MAX_SEND_BUFFER: usize = 128 << 10;

/// hyper's two connection builders, set up once per listener.
pub(super) struct Builders {
    /// For connections that speak HTTP/1.1.
    pub(super) http1: http1::Builder,
    /// For connections that speak HTTP/2.
    pub(super) http2: http2::Builder<TokioExecutor>,
}

pub(super) fn connection_builders(limits: &ConnLimits) -> Builders {
    let mut http1 = http1::Builder::new();
    http1
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper wants at least 8 KiB; leave room for the request line.
        .max_buf_size((limits.max_request_header_bytes + 4096).max(8192));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX))
        // Bounded work per client: streams in parallel, and resets a client
        // may provoke (the "rapid reset" attack) before it gets a GOAWAY.
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        // A peer that stops answering pings is gone: free its streams.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    Builders { http1, http2 }
}
