//! A measuring stick for the next structural step, not a product: the
//! [hyper floor](hyper_floor.rs) with hyper's HTTP/1.1 *client* replaced by
//! an exchange written inline in the request's own future.
//!
//! The hyper floor, like cutover, hands each request to hyper's client
//! connection, which runs in a task of its own: the request travels through
//! a channel into that task, the response comes back through a oneshot, and
//! both move (memcpy) several times on the way. Here the request's future
//! writes the request head to the upstream socket itself and parses the
//! response head with `httparse`: one task per connection, no channel.
//! `benches/load/instructions.sh` runs it as `inline` beside the floor and
//! prints what each costs per request. cutover's own inline client
//! (`src/pool/h1.rs`) takes the same step; this stays as the floor for the
//! path it built.
//!
//! What it leaves out is what a real client must do, and what the numbers
//! do not include: request bodies, chunked and close-delimited response
//! bodies (the body here is read whole, by `Content-Length`), streaming,
//! 1xx responses, upgrades, hop-by-hop headers, timeouts, a pool, and any
//! recovery from an upstream error other than closing the client's
//! connection.
//!
//! Usage: `cargo run --release --example inline_floor -- LISTEN_ADDR UPSTREAM_ADDR`

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most response headers the parser accepts.
const MAX_HEADERS: usize = 64;
/// The largest response (head and body) read whole.
const MAX_RESPONSE: usize = 1 << 20;

#[path = "shared/floor.rs"]
mod floor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    floor::serve("inline_floor", proxy_connection)
}

/// One downstream connection's dedicated upstream connection, with the
/// buffers it reuses from request to request.
struct Upstream {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

async fn proxy_connection(downstream: TcpStream, upstream: SocketAddr) -> Result<(), hyper::Error> {
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return Ok(()); // the client sees the connection close
    };
    let _ = downstream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let upstream = Upstream { stream: upstream, read: BytesMut::with_capacity(8192), write: Vec::with_capacity(512) };
    // hyper serves one HTTP/1 request at a time, so the upstream connection is
    // always here when a request starts: it is taken for the exchange and put
    // back after. The lock is never contended; it is there because the
    // service is `Fn`.
    let slot = Arc::new(Mutex::new(Some(upstream)));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let slot = slot.clone();
        let taken = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        async move {
            let upstream = taken.ok_or_else(|| io::Error::other("upstream connection in use"))?;
            let (upstream, response) = exchange(upstream, &request).await?;
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(upstream);
            Ok::<_, io::Error>(response)
        }
    });
    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(downstream), service).await
}

/// Send `request`'s head upstream and read the whole response.
async fn exchange(
    mut upstream: Upstream,
    request: &Request<Incoming>,
) -> io::Result<(Upstream, Response<Full<Bytes>>)> {
    cutover::pool::h1::encode_head(request, &mut upstream.write);
    upstream.stream.write_all(&upstream.write).await?;
    loop {
        if let Some(response) = parse_response(&mut upstream.read)? {
            return Ok((upstream, response));
        }
        if upstream.read.len() >= MAX_RESPONSE {
            return Err(io::Error::other("response too large"));
        }
        upstream.read.reserve(8192);
        if upstream.stream.read_buf(&mut upstream.read).await? == 0 {
            return Err(io::Error::other("upstream closed before the response ended"));
        }
    }
}

/// The response at the front of `read` once its head and `Content-Length`
/// body are all there (then taken out of `read`); `None` while more is due.
fn parse_response(read: &mut BytesMut) -> io::Result<Option<Response<Full<Bytes>>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(read).map_err(io::Error::other)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(io::Error::other)?;
    // Header values are kept as slices of the head, so the spans are noted
    // now and cut once the head is split off the buffer.
    let base = read.as_ptr() as usize;
    let mut spans = Vec::with_capacity(parsed.headers.len());
    let mut body_len = 0;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(io::Error::other)?;
        if name == header::CONTENT_LENGTH {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| io::Error::other("bad content-length"))?;
        }
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start..start + h.value.len()));
    }
    if read.len() < head_len.saturating_add(body_len) {
        return Ok(None);
    }
    let head = read.split_to(head_len).freeze();
    let body = read.split_to(body_len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    for (name, span) in spans {
        if name != header::CONNECTION {
            map.append(name, HeaderValue::from_maybe_shared(head.slice(span)).map_err(io::Error::other)?);
        }
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = map;
    Ok(Some(response))
}
