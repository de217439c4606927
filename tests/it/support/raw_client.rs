//! A raw client: exact bytes written on a TCP socket, and the responses
//! read back parsed just enough to judge them.
//!
//! Hostile and malformed requests cannot be sent with a client library, and
//! a library would hide what a test must see: how many responses came back
//! on one connection (a second one means a second request was parsed out of
//! the bytes), whether a body was as long as its own framing promised, and
//! whether the proxy closed the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::DEADLINE;

/// One HTTP/1.1 response as the client read it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header fields in arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when chunked.
    pub body: Vec<u8>,
    /// The body was as long as the response's own framing said.
    pub complete: bool,
}

impl RawResponse {
    /// The first field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Everything that came back on one connection.
#[derive(Debug)]
pub struct Outcome {
    /// The final (non-1xx) responses, in order.
    pub responses: Vec<RawResponse>,
    /// The proxy closed (or reset) the connection before the deadline.
    pub closed: bool,
    /// The bytes as text, for failure messages.
    pub raw: String,
}

impl Outcome {
    /// The one response; fails when there were none or several (a second
    /// answer would mean a second request was parsed from the bytes).
    pub fn only(&self) -> &RawResponse {
        assert_eq!(self.responses.len(), 1, "expected exactly one response: {:?}", self.raw);
        &self.responses[0]
    }
}

/// Send `raw` on a new connection (a write cut short by the proxy closing is
/// fine) and read until the proxy closes the connection or [`DEADLINE`] passes.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> Outcome {
    exchange_within(addr, raw, DEADLINE).await
}

/// [`exchange`], reading for at most `limit`.
pub async fn exchange_within(addr: SocketAddr, raw: &[u8], limit: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let _ = stream.write_all(raw).await;
    let (bytes, closed) = read_until_closed(&mut stream, limit).await;
    Outcome { responses: parse_responses(&bytes), closed, raw: String::from_utf8_lossy(&bytes).into_owned() }
}

/// Read until end of stream, a reset (both count as closed) or `limit`:
/// the bytes, and whether the connection closed.
pub async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match timeout_at(end, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one complete response off a keep-alive connection, within [`DEADLINE`].
pub async fn read_one_response(stream: &mut TcpStream) -> RawResponse {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + DEADLINE;
    loop {
        let parsed = parse_responses(&bytes);
        if parsed.first().is_some_and(|r| r.complete) {
            return parsed.into_iter().next().expect("a parsed response");
        }
        match timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            other => panic!("no complete response ({other:?}): {:?}", String::from_utf8_lossy(&bytes)),
        }
    }
}

/// Split a byte stream into responses, skipping 1xx ones; a truncated last
/// one is kept with `complete: false`.
pub fn parse_responses(mut rest: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some(end) = find(rest, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let (body, complete, used) = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            dechunk(rest)
        } else if let Some(n) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let n_have = n.min(rest.len());
            (rest[..n_have].to_vec(), n_have == n, n_have)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), true, 0)
        } else {
            (rest.to_vec(), true, rest.len())
        };
        rest = &rest[used..];
        if !(100..200).contains(&status) {
            out.push(RawResponse { status, headers, body, complete });
        }
    }
    out
}

/// Decode a chunked body at the start of `raw`: (body, complete, bytes used).
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool, usize) {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&raw[at..], b"\r\n") else { return (body, false, raw.len()) };
        let size = std::str::from_utf8(&raw[at..at + eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { return (body, false, raw.len()) };
        at += eol + 2;
        if size == 0 {
            return match find(&raw[at..], b"\r\n") {
                Some(e) => (body, true, at + e + 2),
                None => (body, false, raw.len()),
            };
        }
        if raw.len() < at + size + 2 {
            body.extend_from_slice(&raw[at..raw.len().min(at + size)]);
            return (body, false, raw.len());
        }
        body.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
