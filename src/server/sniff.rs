//! Telling HTTP/1.1 from HTTP/2 on a cleartext connection, before hyper
//! reads a byte.
//!
//! A `peek` leaves the first bytes in the socket, so hyper's read buffer
//! starts empty whichever protocol serves the connection.

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2.
    Http2,
}

/// How an HTTP/2 client with prior knowledge opens (RFC 9113 §3.4).
const PRI: &[u8] = b"PRI ";

/// The protocol a connection's first bytes announce, once they tell: the
/// HTTP/2 preface begins with `PRI `, which no HTTP/1.1 request line does.
/// The rest of the preface is checked on the HTTP/2 side
/// ([`preface`](super::preface)), so that a wrong one is answered with a
/// GOAWAY. `None` while all there is are the first one to three bytes of
/// `PRI `.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(PRI.len());
    if first[..n] != PRI[..n] {
        Some(Protocol::Http1)
    } else if n >= 4 {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// The protocol of a cleartext connection, from a look at its first bytes
/// that leaves them in the socket for hyper; `None` if it closes first.
pub(super) async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; 24];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(protocol) = protocol_of(&first[..n]) {
            return Ok(Some(protocol));
        }
        // Only a client that splits `PRI ` (or a request line's first
        // letters) across packets gets here. A peek would return the same
        // bytes at once, again and again: mark the socket as read to the
        // end, so the next peek waits until more bytes arrive (tokio keeps
        // the mark only if no new readiness came in meanwhile).
        let _ = stream.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::{protocol_of, Protocol};

    #[test]
    fn the_first_bytes_tell_http1_from_the_http2_preface() {
        assert_eq!(protocol_of(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PUT /x"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"POST"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRO"), Some(Protocol::Http1), "PROPFIND parts from PRI at its third byte");
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(Protocol::Http2));
        assert_eq!(protocol_of(b"PRI "), Some(Protocol::Http2));
        // A wrong preface is still HTTP/2's to refuse, with a GOAWAY.
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Some(Protocol::Http2));
        // Too few bytes to tell: wait for more.
        for undecided in [&b"P"[..], b"PR", b"PRI"] {
            assert_eq!(protocol_of(undecided), None, "{undecided:?}");
        }
    }
}
