//! A scripted raw upstream: HTTP/1.1 request bytes in, hand-written bytes
//! out, and a record of exactly what arrived.
//!
//! [`RawUpstream`] is a few lines of TCP on `127.0.0.1:0` rather than an
//! HTTP server, so that a test can make the backend misbehave in ways no
//! server library would (a garbage status line, a body cut short, a reset
//! mid-response, bytes split into tiny writes) and see from the backend's
//! side what the proxy did: each request as it came off the wire (request
//! line, headers, de-framed body, whether the body ended where its framing
//! said), the connection it arrived on, and which connections have ended.
//! A script decides every answer; [`Reply`] is the answer and what the
//! backend does with the connection afterwards.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A keep-alive `200` whose body is `ok`.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// `HTTP/1.1 200 OK` with `body` and its `Content-Length`.
pub fn with_length(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request as a [`RawUpstream`] read it off the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The connection it arrived on, numbered from 0 in accept order.
    pub conn: usize,
    /// Requests that came before it on the same connection.
    pub on_conn: usize,
    /// The request line, e.g. `GET /x HTTP/1.1`.
    pub line: String,
    /// Header fields in arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body with its framing (`Content-Length` or chunked) removed.
    pub body: Vec<u8>,
    /// Whether the body ended where its framing said it would.
    pub complete: bool,
}

impl RawRequest {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or("")
    }

    /// The request target, e.g. `/x?y=1`.
    pub fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }

    /// How many fields named `name` (lower case) it carried.
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }

    /// The first field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// At most one framing header, never both kinds: the message the
    /// upstream got can be read only one way.
    pub fn assert_unambiguous(&self) {
        let framing = self.count("content-length") + self.count("transfer-encoding");
        assert!(framing <= 1, "the upstream got an ambiguously framed request: {self:#?}");
    }
}

/// What the upstream does with its connection once it has written a reply.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Wait for the next request.
    KeepAlive,
    /// Close it (FIN).
    Close,
    /// Read nothing for this long, then close: a short keep-alive timeout.
    CloseAfter(Duration),
    /// Reset it (`SO_LINGER` 0: RST), once the bytes have had time to arrive.
    Reset,
    /// Say nothing more until the proxy hangs up.
    Stall,
}

/// One answer of a [`RawUpstream`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// The bytes written, exactly.
    pub bytes: Vec<u8>,
    /// Write them this many at a time with a short pause between, so the
    /// proxy reads the answer in many small reads.
    pub piece: Option<usize>,
    /// What comes after.
    pub then: Then,
}

impl Reply {
    /// `bytes`, then wait for the next request.
    pub fn keep(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply { bytes: bytes.into(), piece: None, then: Then::KeepAlive }
    }

    /// `bytes`, then close.
    pub fn close(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply { bytes: bytes.into(), piece: None, then: Then::Close }
    }

    /// `bytes`, then close after `idle`.
    pub fn close_after(bytes: impl Into<Vec<u8>>, idle: Duration) -> Reply {
        Reply { bytes: bytes.into(), piece: None, then: Then::CloseAfter(idle) }
    }

    /// `bytes`, then reset.
    pub fn reset(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply { bytes: bytes.into(), piece: None, then: Then::Reset }
    }

    /// `bytes`, then silence with the connection open.
    pub fn stall(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply { bytes: bytes.into(), piece: None, then: Then::Stall }
    }

    /// The same bytes written `n` at a time.
    pub fn in_pieces(mut self, n: usize) -> Reply {
        self.piece = Some(n);
        self
    }
}

/// Decides the reply to the `n`th request (from 0, over all connections).
type Script = Arc<dyn Fn(usize, &RawRequest) -> Reply + Send + Sync>;

/// What the upstream has seen: every request, and per connection whether it ended.
#[derive(Default)]
struct Record {
    requests: Vec<RawRequest>,
    /// Requests ever received (`clear` does not reset it).
    total: usize,
    ended: Vec<bool>,
}

/// A TCP upstream that parses HTTP/1.1 requests strictly, records them and
/// answers each from a script.
pub struct RawUpstream {
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// An upstream answering the `n`th request (over all connections) with
    /// `script(n, request)`. A request whose body never completes gets no
    /// answer; its connection is closed.
    pub async fn scripted(script: impl Fn(usize, &RawRequest) -> Reply + Send + Sync + 'static) -> RawUpstream {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw upstream");
        let addr = listener.local_addr().expect("raw upstream addr");
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let conn = {
                    let mut record = shared.lock().unwrap();
                    record.ended.push(false);
                    record.ended.len() - 1
                };
                tokio::spawn(serve(Wire { stream, buf: Vec::new() }, conn, script.clone(), shared.clone()));
            }
        });
        RawUpstream { addr, record, task }
    }

    /// An upstream giving every request the same reply.
    pub async fn always(reply: Reply) -> RawUpstream {
        RawUpstream::scripted(move |_, _| reply.clone()).await
    }

    /// An upstream answering every request with a keep-alive `200 ok`.
    pub async fn ok() -> RawUpstream {
        RawUpstream::always(Reply::keep(OK)).await
    }

    /// An upstream answering every request with a keep-alive 200 whose body is `name`.
    pub async fn named(name: &str) -> RawUpstream {
        RawUpstream::always(Reply::keep(with_length(name.as_bytes()))).await
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.record.lock().unwrap().requests.clone()
    }

    /// Forget the requests seen so far (connection numbers keep counting).
    pub fn clear(&self) {
        self.record.lock().unwrap().requests.clear();
    }

    /// Connections accepted so far.
    pub fn conns(&self) -> usize {
        self.record.lock().unwrap().ended.len()
    }

    /// `METHOD /path` of the requests each accepted connection carried, in
    /// accept order: `[["GET /1", "GET /2"]]` is one connection carrying
    /// two requests, `[["GET /1"], ["GET /2"]]` two connections.
    pub fn by_conn(&self) -> Vec<Vec<String>> {
        let record = self.record.lock().unwrap();
        let mut out = vec![Vec::new(); record.ended.len()];
        for r in &record.requests {
            out[r.conn].push(format!("{} {}", r.method(), r.path()));
        }
        out
    }

    /// Whether connection `conn` (in accept order) has ended: closed by the
    /// upstream, or by the proxy (the upstream read its end or failed to write).
    pub fn ended(&self, conn: usize) -> bool {
        self.record.lock().unwrap().ended.get(conn).copied().unwrap_or(false)
    }

    /// Wait until connection `conn` has ended.
    pub async fn until_ended(&self, conn: usize, what: &str) {
        super::eventually(super::DEADLINE, what, || self.ended(conn)).await;
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve one connection until either side ends it.
async fn serve(mut wire: Wire, conn: usize, script: Script, record: Arc<Mutex<Record>>) {
    // Pieces must leave as written, not wait for each other's ACKs.
    let _ = wire.stream.set_nodelay(true);
    let mut on_conn = 0;
    while let Some((n, request)) = read_request(&mut wire, conn, on_conn, &record).await {
        on_conn += 1;
        if !request.complete {
            break;
        }
        let reply = script(n, &request);
        if write(&mut wire.stream, &reply).await.is_err() {
            break;
        }
        match reply.then {
            Then::KeepAlive => continue,
            Then::Close => {
                let _ = wire.stream.shutdown().await;
            }
            Then::CloseAfter(idle) => tokio::time::sleep(idle).await,
            Then::Reset => {
                if !reply.bytes.is_empty() {
                    // Let the bytes reach the proxy first; then an RST instead of a FIN.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = wire.stream.set_zero_linger();
            }
            Then::Stall => while wire.fill().await {},
        }
        break;
    }
    drop(wire);
    record.lock().unwrap().ended[conn] = true;
}

async fn write(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    match reply.piece {
        None => stream.write_all(&reply.bytes).await,
        Some(n) => {
            for piece in reply.bytes.chunks(n) {
                stream.write_all(piece).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        }
    }
}

/// A socket with a read buffer, for line- and length-based reads.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Read more bytes; false at end of stream or on error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Everything up to and including `delim`.
    async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = super::raw_client::find(&self.buf, delim) {
                return Some(self.buf.drain(..at + delim.len()).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

/// Read one request, recording it as soon as its head is in (so a request
/// whose body never completes is still seen); its number over all
/// connections, and the request as finally read.
async fn read_request(
    wire: &mut Wire,
    conn: usize,
    on_conn: usize,
    record: &Mutex<Record>,
) -> Option<(usize, RawRequest)> {
    let head = wire.until(b"\r\n\r\n").await?;
    let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let length = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>());
    let mut request = RawRequest { conn, on_conn, line, headers, body: Vec::new(), complete: false };
    let (n, index) = {
        let mut record = record.lock().unwrap();
        record.requests.push(request.clone());
        record.total += 1;
        (record.total - 1, record.requests.len() - 1)
    };
    let (body, complete) = match (chunked, length) {
        (true, _) => read_chunked(wire).await,
        (false, Some(Ok(n))) => match wire.take(n).await {
            Some(body) => (body, true),
            None => (std::mem::take(&mut wire.buf), false),
        },
        (false, Some(Err(_))) => (Vec::new(), false),
        (false, None) => (Vec::new(), true),
    };
    request.body = body;
    request.complete = complete;
    let mut record = record.lock().unwrap();
    if let Some(r) = record.requests.get_mut(index).filter(|r| r.conn == conn && r.on_conn == on_conn) {
        *r = request.clone();
    }
    Some((n, request))
}

/// A chunked body, strictly: hex size, CRLF, data, CRLF; trailers ignored.
async fn read_chunked(wire: &mut Wire) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line) = wire.until(b"\r\n").await else { return (body, false) };
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16) else {
            return (body, false);
        };
        if size == 0 {
            loop {
                match wire.until(b"\r\n").await {
                    None => return (body, false),
                    Some(l) if l.len() == 2 => return (body, true),
                    Some(_) => {}
                }
            }
        }
        let Some(data) = wire.take(size + 2).await else { return (body, false) };
        body.extend_from_slice(&data[..size]);
    }
}
