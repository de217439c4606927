//! The training run for the profile-guided (PGO) release build: real traffic
//! through an instrumented `cutover` binary, so the compiler learns which
//! code is hot. `scripts/pgo-build.sh` runs it; it is not meant to be run by
//! hand.
//!
//! What the profile should look like is what a proxy in production does
//! most, so that is what this sends: keep-alive HTTP/1.1 GETs through a
//! weighted split with a guard on the canary (most of it), 16 KiB response
//! bodies, uploads, HEADs, h2c with concurrent streams, a sticky route, an
//! `h2` upstream pool, upstream 5xx, the admin API (metrics, status, a
//! reload), and a graceful SIGTERM. Each of these runs twice: on the
//! current-thread runtime (`workers = 1`) and on the multi-thread one,
//! because code the training never runs is laid out and optimised as cold.
//!
//! The upstreams are in-process hyper servers on 127.0.0.1; only the
//! `cutover` child writes a profile (this driver is built without
//! instrumentation). Everything is bounded: a fixed number of requests, and
//! a deadline on every wait.
//!
//! With `--start-up` it instead does what a proxy does before it sits idle:
//! start (config watch on, as in production), serve a few keep-alive GETs
//! through the guarded split, see other files and a directory come and go
//! beside its config, see the upstream close the connections it kept and open new
//! ones, serve GETs and h2c requests from clients that then close their
//! connection, answer a metrics scrape, idle two seconds, stop.
//! The build runs the optimised binary that way under callgrind, and lays
//! out the functions it ran next to each other, so an idle proxy keeps few
//! code pages resident. COMMAND is the binary, after any wrapper that runs
//! it (`valgrind --tool=callgrind ...`).
//!
//! Usage: `pgo_training PATH_TO_INSTRUMENTED_CUTOVER`
//!        `pgo_training --start-up COMMAND...`

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every wait (start-up, a response, the exit) ends by this.
const DEADLINE: Duration = Duration::from_secs(120);
/// Keep-alive connections that send the plain GETs at once.
const CONNECTIONS: usize = 32;
/// Plain GETs per connection, per runtime flavour.
const REQUESTS_PER_CONNECTION: usize = 600;
/// GETs the `--start-up` run sends before it stops the proxy.
const START_UP_REQUESTS: usize = 20;
/// How long the `--start-up` run leaves the proxy idle before it stops it:
/// long enough for the timers an idle proxy runs in its first seconds (the
/// guard's and the judge's ticks, the console's samples) to fire once, so
/// that their code is laid out with the rest of start-up.
const START_UP_IDLE: Duration = Duration::from_secs(2);

/// What a run sends: the full training mix, or the start-up only.
#[derive(Clone, Copy)]
enum Mix {
    Training,
    StartUp,
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mix, command) = match args.as_slice() {
        [binary] => (Mix::Training, std::slice::from_ref(binary)),
        [flag, command @ ..] if flag == "--start-up" && !command.is_empty() => (Mix::StartUp, command),
        _ => {
            return Err("usage: pgo_training PATH_TO_INSTRUMENTED_CUTOVER | --start-up COMMAND...".into());
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(train(command, mix))
}

async fn train(command: &[String], mix: Mix) -> Result<(), BoxError> {
    let (http1_upstream, hang_up) = serve_upstream().await?;
    let (h2_upstream, _) = serve_upstream().await?;
    let dir = std::env::temp_dir().join(format!("cutover-pgo-training-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        for workers in [1, 2] {
            let config = dir.join(format!("workers-{workers}.toml"));
            std::fs::write(&config, config_text(workers, http1_upstream, h2_upstream))?;
            let started = Instant::now();
            let requests = run_once(command, &config, mix, log_filter(mix, workers), &hang_up).await?;
            eprintln!("pgo_training: workers = {workers}: {requests} requests in {:.1?}", started.elapsed());
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The `RUST_LOG` a run gets (`None`: unset). The training logs at `info`.
/// Start-up is laid out for both ways a proxy is run: with `RUST_LOG` unset
/// (the default filter is `info`), as in production, and with `RUST_LOG`
/// set, as the load benchmark runs it (`warn`); parsing a `RUST_LOG` runs
/// code of its own. (`cutover::runtime=info` keeps the lines that name the
/// addresses, which this driver waits for.)
fn log_filter(mix: Mix, workers: usize) -> Option<&'static str> {
    match (mix, workers) {
        (Mix::Training, _) => Some("info"),
        (Mix::StartUp, 1) => Some("warn,cutover::runtime=info"),
        (Mix::StartUp, _) => None,
    }
}

/// One proxy process: start it, send the mix, stop it with SIGTERM.
/// `hang_up` makes the HTTP/1.1 upstream close its connections.
async fn run_once(
    command: &[String],
    config: &Path,
    mix: Mix,
    rust_log: Option<&str>,
    hang_up: &watch::Sender<()>,
) -> Result<usize, BoxError> {
    let mut proxy = Proxy::start(command, config, mix, rust_log)?;
    let result = match mix {
        Mix::Training => send_mix(proxy.traffic, proxy.admin).await,
        Mix::StartUp => start_up(proxy.traffic, proxy.admin, hang_up, config).await,
    };
    let stopped = proxy.stop();
    let requests = result?;
    stopped?;
    Ok(requests)
}

/// The request mix; returns how many requests were sent.
async fn send_mix(traffic: SocketAddr, admin: SocketAddr) -> Result<usize, BoxError> {
    let mut clients = tokio::task::JoinSet::new();
    for connection in 0..CONNECTIONS {
        clients.spawn(async move {
            let mut sender = http1_connection(traffic).await?;
            let mut sent = 0;
            for i in 0..REQUESTS_PER_CONNECTION {
                let (method, path, body) = match (connection + i) % 20 {
                    0 => ("GET", "/16k", Bytes::new()),
                    1 => ("POST", "/upload", Bytes::from(vec![b'x'; 4096])),
                    2 => ("HEAD", "/", Bytes::new()),
                    3 => ("GET", "/fail", Bytes::new()),
                    4 => ("GET", "/sticky/cart", Bytes::new()),
                    5 => ("GET", "/h2/item", Bytes::new()),
                    _ => ("GET", "/", Bytes::new()),
                };
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "shop.example")
                    .header("user-agent", "pgo-training")
                    .header("cookie", format!("session=user-{connection}"))
                    .body(Full::new(body))?;
                complete(sender.send_request(request)).await?;
                sent += 1;
            }
            Ok::<usize, BoxError>(sent)
        });
    }
    clients.spawn(h2c_streams(traffic));
    clients.spawn(admin_calls(admin));
    let mut total = 0;
    while let Some(joined) = clients.join_next().await {
        total += joined??;
    }
    Ok(total)
}

/// Files and a directory come and go beside the config (each burst seen
/// by the watch), a few keep-alive GETs through the guarded split (one
/// with a 16 KiB body), the upstream closing the connections the proxy
/// keeps for it (as a backend does when it restarts or drops idle
/// connections) and two more GETs on new ones, two GETs from clients that
/// close the connection after the answer, as curl and health checkers do,
/// four h2c requests from clients that then close their connection
/// (hyper's client with a `GOAWAY` after two, one of 16 KiB, then waiting
/// for the proxy to close; one that just drops it; one that sends a FIN
/// without a `GOAWAY`, as curl does) and one metrics scrape.
async fn start_up(
    traffic: SocketAddr,
    admin: SocketAddr,
    hang_up: &watch::Sender<()>,
    config: &Path,
) -> Result<usize, BoxError> {
    // Other files and directories come and go beside a config (a
    // backend's or a deployment's), and the config watch sees each of
    // them. The watch is live once it has made the reload it makes on
    // starting; each burst of events then makes one more, so the run waits
    // on the counter, not on a guess at how slow the proxy starts (under
    // callgrind, seconds).
    let live = wait_for_watch_reloads(admin, 1).await?;
    let (file, dir) = (config.with_file_name("not-the-config.txt"), config.with_file_name("not-the-config.d"));
    std::fs::write(&file, b"x")?;
    std::fs::create_dir(&dir)?;
    let seen = wait_for_watch_reloads(admin, live + 1).await?;
    std::fs::write(&file, b"xx")?;
    std::fs::remove_file(&file)?;
    std::fs::remove_dir(&dir)?;
    wait_for_watch_reloads(admin, seen + 1).await?;
    let mut sender = http1_connection(traffic).await?;
    for i in 0..START_UP_REQUESTS + 2 {
        if i == START_UP_REQUESTS {
            hang_up.send_replace(());
            // Time for the proxy to see its idle upstream connections end;
            // if it has not, the next request finds one closed and is sent
            // again, which is start-up code of its own.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let path = if i == 0 { "/16k" } else { "/" };
        let request = shop_get(path)?;
        // One request at a time on a single connection: wait until hyper
        // has taken the last one off it.
        sender.ready().await?;
        complete(sender.send_request(request)).await?;
    }
    for path in ["/", "/16k"] {
        // Dropping the sender ends the connection: the client closes it.
        let mut sender = http1_connection(traffic).await?;
        let mut request = shop_get(path)?;
        let headers = request.headers_mut();
        headers.insert("user-agent", hyper::header::HeaderValue::from_static("curl/7.88.1"));
        headers.insert("accept", hyper::header::HeaderValue::from_static("*/*"));
        complete(sender.send_request(request)).await?;
    }
    // Two h2c clients of hyper's: one closes its connection with a
    // `GOAWAY`, the other just drops it. The first also takes a body large
    // enough that h2 sends it from the upstream's buffer rather than
    // copying it into the frame's.
    for graceful in [true, false] {
        let stream = TcpStream::connect(traffic).await?;
        let (mut h2, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let paths: &[&str] = if graceful { &["/", "/16k"] } else { &["/"] };
        for path in paths {
            let request = shop_get(format!("http://{traffic}{path}"))?;
            h2.ready().await?;
            complete(h2.send_request(request)).await?;
        }
        if graceful {
            // With its last sender gone the connection says GOAWAY and ends.
            drop(h2);
            tokio::time::timeout(DEADLINE, connection).await???;
        } else {
            connection.abort();
        }
    }
    h2c_get_then_close_as_curl_does(traffic).await?;
    scrape_metrics(admin).await?;
    tokio::time::sleep(START_UP_IDLE).await;
    Ok(START_UP_REQUESTS + 9)
}

/// Waits (until the deadline) for the config watch's reloads to reach
/// `at_least`, and gives the count then. A reload that finds the file
/// unchanged counts as `ok` in `cutover_config_reloads_total`, and the
/// training config is reloaded by nothing but the watch.
async fn wait_for_watch_reloads(admin: SocketAddr, at_least: u64) -> Result<u64, BoxError> {
    const PREFIX: &str = "cutover_config_reloads_total{result=\"ok\"} ";
    let end = Instant::now() + DEADLINE;
    loop {
        let reloads = scrape_metrics(admin)
            .await?
            .lines()
            .find_map(|line| line.strip_prefix(PREFIX))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .ok_or("the metrics carry no ok count of config reloads")?;
        if reloads >= at_least {
            return Ok(reloads);
        }
        if Instant::now() > end {
            return Err(format!("the config watch made {reloads} reloads, not {at_least}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One scrape of the admin API's `/metrics`, as Prometheus makes it, on a
/// connection of its own: the text, if it answered 2xx in time.
async fn scrape_metrics(admin: SocketAddr) -> Result<String, BoxError> {
    let mut sender = http1_connection(admin).await?;
    let request = Request::get("/metrics").header("host", admin.to_string()).body(Full::new(Bytes::new()))?;
    sender.ready().await?;
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request)).await??;
    let status = response.status();
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect()).await??.to_bytes();
    if !status.is_success() {
        return Err(format!("admin GET /metrics answered {status}").into());
    }
    Ok(String::from_utf8(body.to_vec())?)
}

/// One h2c GET, then a FIN without a `GOAWAY`, as curl ends a connection.
/// hyper's client says `GOAWAY` and waits for the server to close, or
/// drops its socket unread (a reset), so without this the proxy's handling
/// of a client's plain end of stream (h2's `recv_eof` and the `io::Error`
/// it makes) would be left out of the start-up layout, and a curl health
/// check would fault in code pages outside the laid-out start-up code.
async fn h2c_get_then_close_as_curl_does(traffic: SocketAddr) -> Result<(), BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const END_STREAM: u8 = 0x1;
    let mut stream = TcpStream::connect(traffic).await?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
                                                           // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http://127.0.0.1/ in
                                                           // HPACK's static table (:method GET, :scheme http, :path /) and a
                                                           // literal :authority.
    let authority = b"127.0.0.1";
    let block: Vec<u8> = [&[0x82, 0x86, 0x84, 0x41, authority.len() as u8][..], authority].concat();
    out.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    stream.write_all(&out).await?;
    // Read frames until stream 1 ends.
    let mut buf = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut at = 0; // the first frame not looked at yet
    'answer: loop {
        while buf.len() >= at + 9 {
            let len = usize::from(buf[at]) << 16 | usize::from(buf[at + 1]) << 8 | usize::from(buf[at + 2]);
            let (kind, flags) = (buf[at + 3], buf[at + 4]);
            let stream_id = u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]) & 0x7fff_ffff;
            if buf.len() < at + 9 + len {
                break;
            }
            if stream_id == 1 && (kind == 0x0 || kind == 0x1) && flags & END_STREAM != 0 {
                break 'answer;
            }
            at += 9 + len;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err("the proxy closed the h2c connection before it answered".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // The SETTINGS ACK curl sends, then the FIN with no GOAWAY; read to the
    // proxy's close.
    stream.write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]).await?;
    stream.shutdown().await?;
    let mut rest = Vec::new();
    tokio::time::timeout_at(deadline.into(), stream.read_to_end(&mut rest)).await??;
    Ok(())
}

/// HTTP/2 with prior knowledge: one connection, 10 streams at a time.
async fn h2c_streams(traffic: SocketAddr) -> Result<usize, BoxError> {
    let stream = TcpStream::connect(traffic).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut sender = sender.clone();
        streams.spawn(async move {
            for i in 0..500 {
                let path = if i % 10 == 0 { "/16k" } else { "/" };
                let request = shop_get(format!("http://{traffic}{path}"))?;
                complete(sender.send_request(request)).await?;
            }
            Ok::<usize, BoxError>(500)
        });
    }
    let mut total = 0;
    while let Some(joined) = streams.join_next().await {
        total += joined??;
    }
    Ok(total)
}

/// What an operator and Prometheus do meanwhile: scrape, look, reload.
async fn admin_calls(admin: SocketAddr) -> Result<usize, BoxError> {
    let mut sender = http1_connection(admin).await?;
    let calls = [("GET", "/metrics"), ("GET", "/status"), ("POST", "/reload"), ("GET", "/metrics")];
    for (method, path) in calls {
        // The admin API answers a Host that is an IP address, and takes
        // writes that carry its header (see docs/security.md).
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", admin.to_string())
            .header("x-cutover-admin", "1")
            .body(Full::new(Bytes::new()))?;
        let status = complete(sender.send_request(request)).await?;
        if !status.is_success() {
            return Err(format!("admin {method} {path} answered {status}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(calls.len())
}

/// A body-less GET of `uri` for the shop's host, the route most of the
/// traffic takes.
fn shop_get(uri: impl AsRef<str>) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    Request::get(uri.as_ref()).header("host", "shop.example").body(Full::new(Bytes::new()))
}

/// Wait (until the deadline) for the response to a request sent, read its
/// body to the end, and give its status.
async fn complete(
    sent: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
) -> Result<StatusCode, BoxError> {
    let response = tokio::time::timeout(DEADLINE, sent).await??;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

async fn http1_connection(addr: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// An upstream answering HTTP/1.1 and h2c: 13 bytes on most paths, 16 KiB on
/// `/16k`, 500 on `/fail`, and the upload's size on `/upload`; over HTTP/1.1
/// with `Connection: keep-alive`, as nginx answers. Every other answer
/// carries no `Date`, as some backends' do, so that the proxy's own date
/// (HTTP/1.1's and HTTP/2's) is trained and laid out with start-up: every
/// other answer, not every other connection, since which upstream
/// connection a request takes is the proxy's choice. A value sent on the
/// returned channel closes every connection it holds.
async fn serve_upstream() -> Result<(SocketAddr, watch::Sender<()>), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (hang_up, hung_up) = watch::channel(());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut hung_up = hung_up.clone();
            hung_up.mark_unchanged();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().auto_date_header(false);
                builder.http2().auto_date_header(false);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    // Dropping the connection closes it.
                    _ = hung_up.changed() => {}
                }
            });
        }
    });
    Ok((addr, hang_up))
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let http1 = request.version() == hyper::Version::HTTP_11;
    let sixteen_k = request.uri().path() == "/16k";
    let (status, body) = match request.uri().path() {
        "/16k" => (StatusCode::OK, Bytes::from(vec![b'x'; 16 * 1024])),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"failing\n")),
        "/upload" => {
            let size = request.into_body().collect().await.map(|body| body.to_bytes().len()).unwrap_or(0);
            (StatusCode::OK, Bytes::from(format!("{size}\n")))
        }
        _ => (StatusCode::OK, Bytes::from_static(b"hello, world\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    static ANSWERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if ANSWERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(2) {
        // Any date will do: the proxy passes it on.
        let date = hyper::header::HeaderValue::from_static("Mon, 07 Dec 2026 12:00:00 GMT");
        response.headers_mut().insert(hyper::header::DATE, date);
    }
    if http1 {
        // As real backends answer, so that the proxy's removal of these
        // hop-by-hop headers is trained as the hot path it is: nginx sends
        // `Connection: keep-alive` on every response, Node.js adds
        // `Keep-Alive: timeout=5`.
        let headers = response.headers_mut();
        headers.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("keep-alive"));
        if sixteen_k {
            headers.insert("keep-alive", hyper::header::HeaderValue::from_static("timeout=5"));
        }
    }
    Ok(response)
}

/// The training config, with every per-request feature switched on (see the
/// file). `tests/it/deploy.rs` checks that it still loads, since the image
/// build fails without it.
const CONFIG_TEMPLATE: &str = include_str!("pgo_training.toml");

fn config_text(workers: usize, http1_upstream: SocketAddr, h2_upstream: SocketAddr) -> String {
    CONFIG_TEMPLATE
        .replace("@WORKERS@", &workers.to_string())
        .replace("@HTTP1_UPSTREAM@", &http1_upstream.to_string())
        .replace("@H2_UPSTREAM@", &h2_upstream.to_string())
}

/// The instrumented proxy as a child process.
struct Proxy {
    child: Child,
    traffic: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    /// Start `COMMAND... run --config config` with `RUST_LOG` set to
    /// `rust_log` (or unset) and wait until it names its traffic and admin
    /// addresses in its log.
    fn start(command: &[String], config: &Path, mix: Mix, rust_log: Option<&str>) -> Result<Proxy, BoxError> {
        let [program, args @ ..] = command else {
            return Err("no command to run".into());
        };
        let mut command = Command::new(program);
        command.args(args).arg("run");
        // Without the watcher the training's reload is the only one; the
        // start-up run watches the config, as production does.
        if let Mix::Training = mix {
            command.arg("--no-watch");
        }
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.arg("--config").arg(config).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let Some(stderr) = child.stderr.take() else {
            return Err("no stderr pipe".into());
        };
        let (lines, received) = mpsc::channel();
        // Reads stderr to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Once nobody listens, the lines are only drained.
                let _ = lines.send(line);
            }
        });
        let (mut traffic, mut admin) = (None, None);
        let end = Instant::now() + DEADLINE;
        loop {
            if let (Some(traffic), Some(admin)) = (traffic, admin) {
                return Ok(Proxy { child, traffic, admin });
            }
            let left = end.saturating_duration_since(Instant::now());
            let Ok(line) = received.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cutover did not log its addresses in time (or exited)".into());
            };
            if line.contains("serving traffic") {
                traffic = address_in(&line);
            } else if line.contains("serving admin API") {
                admin = address_in(&line);
            }
        }
    }

    /// SIGTERM, then wait for a clean exit: the profile is written at exit.
    fn stop(&mut self) -> Result<(), BoxError> {
        let pid = self.child.id().to_string();
        // The shell's built-in kill: no procps needed in a minimal build image.
        let signalled = Command::new("sh").args(["-c", "kill -TERM \"$0\"", &pid]).status()?;
        if !signalled.success() {
            return Err(format!("kill -TERM {pid} failed").into());
        }
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() { Ok(()) } else { Err(format!("cutover exited with {status}").into()) };
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("cutover did not exit after SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `addr=IP:PORT` of a log line.
fn address_in(line: &str) -> Option<SocketAddr> {
    let start = line.find("addr=")? + "addr=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}
