//! Heap allocations per proxied request, counted by a counting global
//! allocator around the real proxy.
//!
//! The proxy runs in-process (`cutover::bind` and `cutover::run`, with the
//! load benchmark's config shape: a 90/10 split between two pools with a
//! guard) on a current-thread runtime in a thread of its own, against a real
//! upstream on 127.0.0.1 in another thread; the client runs in a third.
//! Only allocations made on the proxy's thread are counted, so the figures
//! are the proxy's alone. Each case sends its requests one after another
//! after a warm-up (pools filled, buffers grown), and divides the
//! allocations made meanwhile by the requests:
//!
//! - `h1 GET`: HTTP/1.1 keep-alive GET, 13-byte answer (the load benchmark's
//!   main case);
//! - `h1 POST 64 B`: the same with a 64-byte request body (the path through
//!   hyper's client);
//! - `h2c GET`: HTTP/2 with prior knowledge, one stream at a time.
//!
//! Fewer allocations per request is one of the few things on the request
//! path that can be counted exactly, so a change that adds one shows here
//! even when no timing could see it. `reallocs/req` counts growth of
//! existing blocks (a `Vec` or `BytesMut` that was too small); `>1032 B/req`
//! blocks too large for glibc's per-thread cache, which cost a search of
//! its bins and a merge when freed; `>=8 KiB/req` buffers.
//!
//! Run: `cargo bench --bench alloc_per_request` (ALLOC_REQUESTS=N, default
//! 5000 per case; ALLOC_IDS=0 turns request IDs and started traces off, to
//! show what the two headers every request gets by default cost; ALLOC_LOG=json
//! or text logs every request to a file, to show what a logged request
//! allocates). Under `cargo test --benches` (CI runs it) it runs 200 requests
//! per case and fails when a keep-alive GET allocates a block over 1,032
//! bytes or more than its two blocks, a POST or an h2c request a new 8 KiB
//! buffer, or an h2c request a block over 1,032 bytes (see `check`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

thread_local! {
    /// Set on the proxy's thread only: allocations elsewhere are not counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations of blocks larger than glibc's per-thread cache serves.
static OVER_CACHE: AtomicU64 = AtomicU64::new(0);
/// Allocations of 8 KiB or more: buffers.
static BUFFERS: AtomicU64 = AtomicU64::new(0);

/// The largest block glibc's per-thread cache (tcache) hands out and takes
/// back without searching its arena's bins.
const CACHED_MAX: usize = 1032;

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if size > CACHED_MAX {
        OVER_CACHE.fetch_add(1, Ordering::Relaxed);
    }
    if size >= 8 * 1024 {
        BUFFERS.fetch_add(1, Ordering::Relaxed);
    }
}

fn counted() -> bool {
    // `try_with`: a thread being torn down has no thread-locals left
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is passed through to the system allocator unchanged;
// the counters are atomics and the thread-local is a const-initialised Cell
// without a destructor, so counting never allocates or re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            count(layout.size());
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            count(layout.size());
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nhello, world\n";

/// The upstream: HTTP/1.1 keep-alive, reads each request's head and its
/// Content-Length body, answers 13 bytes.
async fn upstream(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            loop {
                let (head, length) = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                        let length = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (head, length);
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                };
                while buf.len() < head + length {
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                buf.drain(..head + length);
                if stream.write_all(ANSWER).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One HTTP/1.1 request on a keep-alive connection; its answer read whole.
async fn h1_request(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> Result<(), BoxError> {
    stream.write_all(request).await?;
    buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(buf)? {
            if resp.code != Some(200) {
                return Err(format!("status {:?}", resp.code).into());
            }
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or("no content-length")?;
            while buf.len() < head + length {
                if stream.read_buf(buf).await? == 0 {
                    return Err("closed mid-body".into());
                }
            }
            return Ok(());
        }
        if stream.read_buf(buf).await? == 0 {
            return Err("closed before the answer".into());
        }
    }
}

/// One h2c request on `client`'s connection; its answer read whole.
async fn h2_request(
    client: h2::client::SendRequest<Bytes>,
    proxy: SocketAddr,
) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
    let mut client = client.ready().await?;
    let request = http::Request::get(format!("http://{proxy}/")).body(())?;
    let (response, _) = client.send_request(request, true)?;
    let response = response.await?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()).into());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    Ok(client)
}

#[derive(Clone, Copy)]
enum Case {
    H1Get,
    H1Post,
    H2cGet,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::H1Get => "h1 GET keep-alive",
            Case::H1Post => "h1 POST 64 B body",
            Case::H2cGet => "h2c GET",
        }
    }
}

/// Counters after `requests` requests of `case` (after `warmup` others),
/// per request.
async fn measure(proxy: SocketAddr, case: Case, warmup: usize, requests: usize) -> Result<PerRequest, BoxError> {
    let settle = || tokio::time::sleep(Duration::from_millis(100));
    match case {
        Case::H1Get | Case::H1Post => {
            let request: Vec<u8> = match case {
                Case::H1Get => b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec(),
                _ => {
                    let mut r = b"POST /upload HTTP/1.1\r\nHost: bench\r\ncontent-type: application/octet-stream\r\ncontent-length: 64\r\n\r\n".to_vec();
                    r.extend_from_slice(&[b'x'; 64]);
                    r
                }
            };
            let mut stream = TcpStream::connect(proxy).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(4096);
            for _ in 0..warmup {
                h1_request(&mut stream, &mut buf, &request).await?;
            }
            settle().await;
            let before = snapshot();
            for _ in 0..requests {
                h1_request(&mut stream, &mut buf, &request).await?;
            }
            settle().await;
            Ok(per_request(before, snapshot(), requests))
        }
        Case::H2cGet => {
            let tcp = TcpStream::connect(proxy).await?;
            tcp.set_nodelay(true)?;
            let (mut client, connection) = h2::client::handshake(tcp).await?;
            let connection = tokio::spawn(connection);
            for _ in 0..warmup {
                client = h2_request(client, proxy).await?;
            }
            settle().await;
            let before = snapshot();
            for _ in 0..requests {
                client = h2_request(client, proxy).await?;
            }
            settle().await;
            let counted = per_request(before, snapshot(), requests);
            // Closed now: nothing polls the spawned connection once this
            // case returns, and the proxy's shutdown would wait out its
            // drain for a connection left open.
            drop(client);
            connection.abort();
            let _ = connection.await;
            Ok(counted)
        }
    }
}

/// What a case's requests allocated on the proxy's thread, per request.
struct PerRequest {
    allocs: f64,
    reallocs: f64,
    bytes: f64,
    over_cache: f64,
    buffers: f64,
}

fn snapshot() -> [u64; 5] {
    [&ALLOCS, &REALLOCS, &BYTES, &OVER_CACHE, &BUFFERS].map(|c| c.load(Ordering::Relaxed))
}

fn per_request(before: [u64; 5], after: [u64; 5], n: usize) -> PerRequest {
    let d = |i: usize| (after[i] - before[i]) as f64 / n as f64;
    PerRequest { allocs: d(0), reallocs: d(1), bytes: d(2), over_cache: d(3), buffers: d(4) }
}

/// Under `cargo test --benches` (CI), what the request path must not
/// allocate: a keep-alive HTTP/1.1 GET no block beyond glibc's per-thread
/// cache (its request future included, `proxy::forward`), and no more
/// allocations than its two (the write queue keeps its room,
/// `vendor/hyper`); a POST through hyper's client no new read buffer (the
/// emptied one, still shared with the body on its way, is read into as it
/// is, `vendor/hyper`); and an h2c connection that idles between requests
/// no new codec buffers (they go to the thread's spares, `vendor/h2`) and
/// no block over that size for the slabs of its streams and queued
/// frames, made again for each stream (`vendor/h2`, `reserve_first`).
/// Each, undone, costs at least one such block (or allocation) a
/// request; background work on the proxy's thread (the
/// console's sampling, the guard's evaluation, the memory check) allocates
/// some now and then, more on a slow machine, hence the bound of half a
/// block a request rather than none.
fn check(case: Case, got: &PerRequest) -> Option<String> {
    const BOUND: f64 = 0.5;
    const BUFFERS: &str = "blocks of 8 KiB or more";
    let over_cache = format!("blocks over {CACHED_MAX} bytes");
    // More than `expected` of `what` a request, beyond the bound.
    let over = |count: f64, expected: f64, what: &str, why: &str| {
        (count >= expected + BOUND).then(|| {
            let expected = if expected == 0.0 { "none".to_string() } else { expected.to_string() };
            format!("{}: {count:.2} {what} per request, expected {expected}{why}", case.name())
        })
    };
    match case {
        Case::H1Get => over(got.over_cache, 0.0, &over_cache, "").or_else(|| {
            over(
                got.allocs,
                2.0,
                "allocations",
                " (the forwarding future and the exchange's timer; the write queue keeps its room between responses)",
            )
        }),
        Case::H1Post => over(
            got.buffers,
            0.0,
            BUFFERS,
            " (an emptied read buffer still shared with a body in flight is read into as it is)",
        ),
        Case::H2cGet => over(got.buffers, 0.0, BUFFERS, " (the codec's buffers come from spares)").or_else(|| {
            over(got.over_cache, 0.0, &over_cache, " (the first room of the streams' and frames' slabs fits the cache)")
        }),
    }
}

/// Start the proxy on its own thread; its traffic address.
fn start_proxy(
    upstream: SocketAddr,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>), BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cutover.toml");
    let ids = if std::env::var("ALLOC_IDS").is_ok_and(|v| v == "0") {
        "request_id_header = \"\"\nstart_traces = false"
    } else {
        ""
    };
    // ALLOC_LOG=json|text: every request logged to a file, to count what a
    // logged request allocates on the proxy's thread.
    let log = match std::env::var("ALLOC_LOG") {
        Ok(format) if !format.is_empty() => {
            format!("[access_log]\nto = \"{}\"\nformat = \"{format}\"\n", dir.path().join("access.log").display())
        }
        _ => String::new(),
    };
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
{ids}

[admin]
listen = "127.0.0.1:0"

[pools.stable]
backends = ["{upstream}"]

[pools.canary]
backends = ["{upstream}"]
[pools.canary.guard]
max_error_rate = 0.5
window = "30s"
min_requests = 100

[[routes]]
name = "app"
path_prefix = "/"
split = {{ stable = 90, canary = 10 }}

{log}"#
        ),
    )?;
    let config = cutover::config::load(&path)?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _dir = dir;
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = addr_tx.send(Err(e.to_string()));
                return;
            }
        };
        COUNTED.with(|c| c.set(true));
        runtime.block_on(async move {
            let listeners = match cutover::bind(&config).await {
                Ok(l) => l,
                Err((addr, e)) => {
                    let _ = addr_tx.send(Err(format!("bind {addr}: {e}")));
                    return;
                }
            };
            let _ = addr_tx.send(Ok(listeners.traffic_addrs()[0]));
            let options = cutover::RunOptions { seed: Some(1), ..Default::default() };
            if let Err(e) = cutover::run(config, listeners, options, async move {
                let _ = stop_rx.await;
            })
            .await
            {
                eprintln!("proxy: {e}");
            }
        });
        COUNTED.with(|c| c.set(false));
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30))??;
    Ok((addr, stop_tx, thread))
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a
    // quick check that every case works.
    let benching = std::env::args().any(|a| a == "--bench");
    let requests = match std::env::var("ALLOC_REQUESTS") {
        Ok(v) => v.parse()?,
        Err(_) if benching => 5000,
        Err(_) => 200,
    };
    let warmup = (requests / 10).max(20);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let upstream_listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let upstream_addr = upstream_listener.local_addr()?;
    let upstream_thread = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(upstream(upstream_listener));
        }
    });
    drop(upstream_thread); // runs until the process exits

    let (proxy, stop, proxy_thread) = start_proxy(upstream_addr)?;
    println!("allocations on the proxy's thread per proxied request ({requests} requests per case, after {warmup}):");
    println!(
        "{:<20} {:>11} {:>13} {:>11} {:>14} {:>13}",
        "case", "allocs/req", "reallocs/req", "bytes/req", ">1032 B/req", ">=8 KiB/req"
    );
    let mut failed = Vec::new();
    for case in [Case::H1Get, Case::H1Post, Case::H2cGet] {
        let got = runtime.block_on(measure(proxy, case, warmup, requests))?;
        println!(
            "{:<20} {:>11.2} {:>13.2} {:>11.0} {:>14.2} {:>13.2}",
            case.name(),
            got.allocs,
            got.reallocs,
            got.bytes,
            got.over_cache,
            got.buffers
        );
        if !benching {
            failed.extend(check(case, &got));
        }
    }
    let _ = stop.send(());
    let _ = proxy_thread.join();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}
