//! What the floors without hyper share: reading a stream into a growing
//! buffer, with a bound on what one message may take.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest head, or response, read whole.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Read more into `buf`; false at a clean end of the stream.
pub async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.len() >= MAX_MESSAGE {
        return Err(io::Error::other("message too large"));
    }
    buf.reserve(4096);
    Ok(stream.read_buf(buf).await? > 0)
}
