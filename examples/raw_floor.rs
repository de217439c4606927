//! A measuring stick for the structural step past hyper's server, not a
//! product: the [inline floor](inline_floor.rs) with hyper's HTTP/1.1
//! *server* replaced by a loop written here, and no header map on either
//! side.
//!
//! The inline floor still parses each request into hyper's `Request` (a
//! `HeaderMap` of owned names and shared values), runs hyper's dispatcher,
//! and encodes the response from another `HeaderMap`. Here the request head
//! is parsed with `httparse` in place and its bytes are written upstream as
//! they came; the response head is parsed the same way and written back as
//! it came. What is left is what any proxy on tokio pays: the runtime, its
//! readiness and the kernel. `benches/load/floors.sh` measures its CPU per
//! request at a fixed rate beside nginx, the inline floor and cutover, and
//! `benches/load/instructions.sh` counts its instructions as `raw`; the
//! [maps floor](maps_floor.rs) sits between the two.
//!
//! What it leaves out is what a real server must do, and what the numbers
//! do not include: request bodies, chunked and close-delimited responses,
//! streaming, 1xx responses, upgrades, hop-by-hop and forwarding headers,
//! timeouts, and any answer to a malformed request but a closed connection.
//!
//! Usage: `cargo run --release --example raw_floor -- LISTEN_ADDR UPSTREAM_ADDR`

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Most headers either parser accepts.
const MAX_HEADERS: usize = 64;

#[path = "shared/fill.rs"]
mod fill;
#[path = "shared/floor.rs"]
mod floor;

use fill::fill;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    floor::serve("raw_floor", proxy_connection)
}

async fn proxy_connection(mut downstream: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let Ok(mut upstream) = TcpStream::connect(upstream).await else {
        return Ok(()); // the client sees the connection close
    };
    downstream.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let mut requests = BytesMut::with_capacity(8192);
    let mut responses = BytesMut::with_capacity(8192);
    loop {
        // One request head, forwarded as it came (pipelined ones wait in
        // `requests` for the next turn).
        let head_len = loop {
            if let Some(len) = request_head(&requests)? {
                break len;
            }
            if !fill(&mut downstream, &mut requests).await? {
                return Ok(());
            }
        };
        upstream.write_all(&requests[..head_len]).await?;
        requests.advance(head_len);
        // Its response, whole, written back as it came.
        let response_len = loop {
            if let Some(len) = response_length(&responses)? {
                break len;
            }
            if !fill(&mut upstream, &mut responses).await? {
                return Err(io::Error::other("upstream closed before the response ended"));
            }
        };
        downstream.write_all(&responses[..response_len]).await?;
        responses.advance(response_len);
    }
}

/// The length of the bodiless request head at the front of `buf`, once it
/// is all there.
fn request_head(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf).map_err(io::Error::other)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => {
            let has_body = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if has_body {
                return Err(io::Error::other("request bodies are not forwarded here"));
            }
            Ok(Some(len))
        }
    }
}

/// The length of the response (head and `Content-Length` body) at the
/// front of `buf`, once it is all there.
fn response_length(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).map_err(io::Error::other)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let mut body_len = 0usize;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("bad content-length"))?;
        }
    }
    let total = head_len.saturating_add(body_len);
    Ok((buf.len() >= total).then_some(total))
}
