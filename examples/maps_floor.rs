//! A measuring stick for the structural step past hyper's server, not a
//! product: the [raw floor](raw_floor.rs) with both heads taken through
//! `http`'s types, as hyper and cutover's request path take them.
//!
//! Between the [inline floor](inline_floor.rs) (hyper's server, header
//! maps on both sides) and the raw floor (neither), this keeps the header
//! maps and drops hyper's server: the request head is parsed into a
//! `Request` (its values slices of the read buffer, as hyper makes them)
//! and encoded upstream from it, the response head parsed into a
//! `HeaderMap` and encoded back from it, by a loop written here. So it
//! tells a server of cutover's own that keeps `http`'s types (and the
//! request path as it is) from one that forwards heads as bytes: what each
//! could save. `benches/load/floors.sh` measures its CPU per request as
//! `maps`, `benches/load/instructions.sh` its instructions.
//!
//! It leaves out what the raw floor leaves out: request bodies, chunked and
//! close-delimited responses, streaming, 1xx responses, upgrades,
//! hop-by-hop and forwarding headers, timeouts, and any answer to a
//! malformed request but a closed connection.
//!
//! Usage: `cargo run --release --example maps_floor -- LISTEN_ADDR UPSTREAM_ADDR`

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
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
    floor::serve("maps_floor", proxy_connection)
}

async fn proxy_connection(mut downstream: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let Ok(mut upstream) = TcpStream::connect(upstream).await else {
        return Ok(()); // the client sees the connection close
    };
    downstream.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let mut requests = BytesMut::with_capacity(8192);
    let mut responses = BytesMut::with_capacity(8192);
    let mut write = Vec::with_capacity(512);
    loop {
        let request = loop {
            if let Some(request) = parse_request(&mut requests)? {
                break request;
            }
            if !fill(&mut downstream, &mut requests).await? {
                return Ok(());
            }
        };
        cutover::pool::h1::encode_head(&request, &mut write);
        upstream.write_all(&write).await?;
        let (status, headers, body) = loop {
            if let Some(response) = parse_response(&mut responses)? {
                break response;
            }
            if !fill(&mut upstream, &mut responses).await? {
                return Err(io::Error::other("upstream closed before the response ended"));
            }
        };
        encode_response(status, &headers, &body, &mut write);
        downstream.write_all(&write).await?;
    }
}

/// The bodiless request at the front of `buf` as a `Request` (then taken
/// out of `buf`), once its head is all there.
fn parse_request(buf: &mut BytesMut) -> io::Result<Option<Request<()>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf).map_err(io::Error::other)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let base = buf.as_ptr() as usize;
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()).map_err(io::Error::other)?;
    let path = parsed.path.unwrap_or("/");
    let path_span = path.as_ptr() as usize - base..path.as_ptr() as usize - base + path.len();
    let spans = header_spans(parsed.headers, base)?;
    let head = buf.split_to(head_len).freeze();
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from_maybe_shared(head.slice(path_span)).map_err(io::Error::other)?;
    *request.headers_mut() = header_map(spans, &head)?;
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v != "0");
    if has_body {
        return Err(io::Error::other("request bodies are not forwarded here"));
    }
    Ok(Some(request))
}

/// The response at the front of `buf` once its head and `Content-Length`
/// body are all there (then taken out of `buf`).
fn parse_response(buf: &mut BytesMut) -> io::Result<Option<(StatusCode, HeaderMap, Bytes)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf).map_err(io::Error::other)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(io::Error::other)?;
    let spans = header_spans(parsed.headers, buf.as_ptr() as usize)?;
    let body_len = match spans.iter().find(|(name, _)| name == header::CONTENT_LENGTH) {
        Some((_, span)) => std::str::from_utf8(&buf[span.clone()])
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| io::Error::other("bad content-length"))?,
        None => 0,
    };
    if buf.len() < head_len.saturating_add(body_len) {
        return Ok(None);
    }
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(body_len).freeze();
    Ok(Some((status, header_map(spans, &head)?, body)))
}

/// Each header's name, and where its value lies in the buffer at `base`.
fn header_spans(
    headers: &[httparse::Header<'_>],
    base: usize,
) -> io::Result<Vec<(HeaderName, std::ops::Range<usize>)>> {
    headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(io::Error::other)?;
            let start = h.value.as_ptr() as usize - base;
            Ok((name, start..start + h.value.len()))
        })
        .collect()
}

/// The headers as a map, each value a slice of `head` (no copy), as hyper
/// builds them; `Connection` left out, as a proxy does.
fn header_map(spans: Vec<(HeaderName, std::ops::Range<usize>)>, head: &Bytes) -> io::Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for (name, span) in spans {
        if name != header::CONNECTION {
            map.append(name, HeaderValue::from_maybe_shared(head.slice(span)).map_err(io::Error::other)?);
        }
    }
    Ok(map)
}

/// The response's head, from the map, and its body, into `out`.
fn encode_response(status: StatusCode, headers: &HeaderMap, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}
