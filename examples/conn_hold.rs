//! The client of the load benchmark's memory cases (`benches/load/run.sh`,
//! `MEM_CASES`): many HTTP/1.1 keep-alive connections to one proxy, from one
//! thread, to see what a connection costs the proxy at scale.
//!
//! - `--mode idle`: every connection sends one `GET /`, reads the answer and
//!   stays open, silent, for `--hold` seconds after the last one was
//!   answered; then all close. The proxy's RSS while they idle, less its RSS
//!   before, is what an idle keep-alive connection costs it.
//! - `--mode idle-h2`: the same over HTTP/2 with prior knowledge (h2c):
//!   every connection sends one `GET /` as one stream, reads the answer
//!   and stays open: what an idle HTTP/2 connection costs.
//! - `--mode rate`: every connection sends one `GET /` on opening, then one
//!   a second (the connections spread evenly over the second) for
//!   `--seconds`: the proxy's CPU per request and memory with many slow
//!   clients, which is what an edge proxy mostly has.
//!
//! It prints `ready answered=N errors=E open_ms=T` once every connection has
//! had its first answer (or failed), and in rate mode `measured requests=R
//! errors=E seconds=S` at the end of the measured window; run.sh reads the
//! proxy's RSS and CPU at those lines. Connections open at most 256 at a
//! time, so no listen backlog overflows. Everything is bounded in time: a
//! connection that gets no answer within 10 s counts as an error, and the
//! program stops by itself. Loopback use only; the caller raises the file
//! descriptor limit (`ulimit -n`) above `--conns`.
//!
//! Usage: `conn_hold --addr 127.0.0.1:18025 --conns 10000 --mode idle --hold 5`

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

/// Longest wait for one answer, or for one connect.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being opened at once.
const OPENING_AT_ONCE: usize = 256;
/// A response head larger than this is an error (the backend's is ~200 bytes).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Idle,
    IdleH2,
    Rate,
}

struct Args {
    addr: SocketAddr,
    conns: usize,
    mode: Mode,
    hold: u64,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut conns = 10_000;
    let mut mode = Mode::Idle;
    let mut hold = 5;
    let mut seconds = 10;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| bad(&e))?),
            "--conns" => conns = value.parse().map_err(|e| bad(&e))?,
            "--hold" => hold = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => seconds = value.parse().map_err(|e| bad(&e))?,
            "--mode" => {
                mode = match value.as_str() {
                    "idle" => Mode::Idle,
                    "idle-h2" => Mode::IdleH2,
                    "rate" => Mode::Rate,
                    _ => return Err(format!("--mode {value}: expected idle, idle-h2 or rate")),
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    if conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    Ok(Args { addr, conns, mode, hold, seconds })
}

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    errors: AtomicU64,
    /// Answers inside the measured window (rate mode).
    measured: AtomicU64,
    measured_errors: AtomicU64,
}

/// Send one `GET /` and read its answer: Ok if it was a 200 with a body
/// framed by Content-Length that left the connection open.
async fn one_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_RESPONSE {
            return Err(io::Error::other("response head too large"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(io::Error::other)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("not a 200: {}", head.lines().next().unwrap_or(""))));
    }
    let mut length = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(io::Error::other)?);
        } else if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            return Err(io::Error::other("the proxy closes the connection"));
        }
    }
    let length = length.ok_or_else(|| io::Error::other("no content-length"))?;
    while buf.len() < head_end + length {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    buf.clear();
    buf.shrink_to(256);
    Ok(())
}

async fn timed(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    tokio::time::timeout(ANSWER_TIMEOUT, one_request(stream, buf))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// One connection's life: open, first request, then hold (idle) or send
/// one request a second from `start` (rate), until `stop`.
async fn connection(
    args: Arc<Args>,
    index: usize,
    opening: Arc<Semaphore>,
    counts: Arc<Counts>,
    mut start: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    if args.mode == Mode::IdleH2 {
        return connection_h2(args, index, opening, counts, stop).await;
    }
    let first = async {
        let _permit = opening.acquire().await.map_err(io::Error::other)?;
        let mut stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(args.addr))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        stream.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(256);
        timed(&mut stream, &mut buf).await?;
        Ok::<_, io::Error>((stream, buf))
    };
    let (mut stream, mut buf) = match first.await {
        Ok(ok) => {
            counts.answered.fetch_add(1, Ordering::Relaxed);
            ok
        }
        Err(e) => {
            if counts.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("connection {index}: {e}");
            }
            return;
        }
    };
    if args.mode == Mode::Rate {
        // copied out at once: the channel's read guard must not be held
        let at = match start.wait_for(Option::is_some).await {
            Ok(at) => *at,
            Err(_) => return,
        };
        let Some(at) = at else { return };
        let end = at + Duration::from_secs(args.seconds);
        // spread the connections evenly over each second
        let offset = Duration::from_secs_f64(index as f64 / args.conns as f64);
        let mut next = at + offset;
        while next < end {
            tokio::time::sleep_until(next.into()).await;
            match timed(&mut stream, &mut buf).await {
                Ok(()) if Instant::now() < end => counts.measured.fetch_add(1, Ordering::Relaxed),
                Ok(()) => 0,
                Err(e) => {
                    if counts.measured_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connection {index}: {e}");
                    }
                    return;
                }
            };
            next += Duration::from_secs(1);
        }
    }
    // hold the connection open, silent, until told to close
    let _ = stop.wait_for(|s| *s).await;
    drop(stream);
}

/// One HTTP/2 connection's life: open, one `GET /` on one stream, then
/// hold the connection open, silent, until `stop`.
async fn connection_h2(
    args: Arc<Args>,
    index: usize,
    opening: Arc<Semaphore>,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) {
    use http_body_util::{BodyExt, Empty};
    let first = async {
        let _permit = opening.acquire().await.map_err(io::Error::other)?;
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(args.addr))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(io::Error::other)?;
        let driver = tokio::spawn(conn);
        let request = http::Request::get(format!("http://{}/", args.addr))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(io::Error::other)?;
        let answer = async {
            let response = sender.send_request(request).await.map_err(io::Error::other)?;
            if response.status() != http::StatusCode::OK {
                return Err(io::Error::other(format!("not a 200: {}", response.status())));
            }
            response.into_body().collect().await.map_err(io::Error::other)?;
            Ok(())
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        Ok::<_, io::Error>((sender, driver))
    };
    let (sender, driver) = match first.await {
        Ok(ok) => {
            counts.answered.fetch_add(1, Ordering::Relaxed);
            ok
        }
        Err(e) => {
            if counts.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("connection {index}: {e}");
            }
            return;
        }
    };
    let _ = stop.wait_for(|s| *s).await;
    drop(sender);
    driver.abort();
}

fn main() {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(e) => {
            eprintln!("conn_hold: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conn_hold: runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(drive(args));
    std::process::exit(code);
}

async fn drive(args: Arc<Args>) -> i32 {
    let counts = Arc::new(Counts::default());
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        tasks.push(tokio::spawn(connection(
            args.clone(),
            index,
            opening.clone(),
            counts.clone(),
            start_rx.clone(),
            stop_rx.clone(),
        )));
    }
    // every connection answered or failed; bounded by the per-step timeouts
    let settled = |c: &Counts| c.answered.load(Ordering::Relaxed) + c.errors.load(Ordering::Relaxed);
    while settled(&counts) < args.conns as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ready answered={} errors={} open_ms={}",
        counts.answered.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        began.elapsed().as_millis()
    );
    match args.mode {
        Mode::Idle | Mode::IdleH2 => tokio::time::sleep(Duration::from_secs(args.hold)).await,
        Mode::Rate => {
            let at = Instant::now();
            let _ = start_tx.send(Some(at));
            tokio::time::sleep_until((at + Duration::from_secs(args.seconds)).into()).await;
            // answers still on their way at the end of the window are not counted
            println!(
                "measured requests={} errors={} seconds={} answered={}",
                counts.measured.load(Ordering::Relaxed),
                counts.errors.load(Ordering::Relaxed) + counts.measured_errors.load(Ordering::Relaxed),
                args.seconds,
                counts.answered.load(Ordering::Relaxed),
            );
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, task).await;
    }
    println!("closed after_ms={}", began.elapsed().as_millis());
    0
}
