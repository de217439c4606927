//! Differential test of the two upstream HTTP/1.1 clients.
//!
//! A request without a body goes through the inline client
//! (`src/pool/h1.rs`), a request with one through hyper's client. Both read
//! the same kind of answer from the same kind of backend, so for the same
//! backend bytes the client of the proxy must see the same outcome: status,
//! the headers that matter, body (or a body cut short), trailers, and
//! whether the upstream connection carries the next request. Each case of
//! the corpus below is sent once as a `GET` (`HEAD` for the `HEAD` cases)
//! without a body and once as a `POST` (`HEAD`) with one, each through a
//! fresh backend and proxy; the backend answers the case's request with the
//! case's bytes, exactly as written, and every later request with a plain
//! `200 ok`, logging which connection carried which request.
//!
//! The corpus is partly written by hand (framings, malformed heads, 1xx,
//! no-body statuses, obsolete line folding, stalls) and partly generated
//! (a response cut at every stage, oversize heads, header counts around the
//! limit). Where the two clients differ, the case is in [`KNOWN`] with the
//! reason: on purpose, or a defect named there that is fixed elsewhere. A
//! known difference that has gone away fails the test too, so the table
//! stays true.
//!
//! After every case, both proxies must still serve a plain request with
//! `200 ok` (no panic, no stray bytes taken for the next answer).

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// The proxy's `request_timeout`, which the stall cases run into: short,
/// since they wait it out, but long enough that the slowest case that does
/// not stall (an answer in one-byte pieces, a pause after each) never meets
/// it on a loaded machine.
const REQUEST_TIMEOUT: &str = "5s";

/// Generous bound for one exchange, stalls included.
const DEADLINE: Duration = Duration::from_secs(20);

/// Cases run at once (each with two proxies and two backends).
const PARALLEL: usize = 8;

/// Known differences: case name, and why the clients differ. When a
/// difference is fixed, the test says so and its entry goes.
const KNOWN: &[(&str, &str)] = &[
    (
        "content-length beside chunked",
        "hardening gap of hyper's client: both read the chunked body and forward it whole (the Content-Length \
         removed, RFC 9112 §6.3), but only the inline client then drops the connection, since an answer with \
         both framings is a sign of response splitting; hyper's client gives it back to the pool",
    ),
    (
        "a 410 KiB header",
        "on purpose: the inline client refuses a response head over 400 KiB by its length, whatever the reads \
         that brought it; hyper's client refuses one only when a read leaves its buffer full with the head \
         unfinished, so whether it takes a head just over its limit depends on how the bytes arrive",
    ),
];

/// What the backend does after writing a case's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    /// Wait for the next request on the connection.
    Keep,
    /// Close the connection.
    Close,
    /// Hold the connection open and send nothing more.
    Stall,
}

/// One response framing of the corpus.
#[derive(Debug, Clone)]
struct Case {
    /// Names the case in failures and in [`KNOWN`].
    name: String,
    /// `GET` or `HEAD`: the method of the case's request.
    method: &'static str,
    /// The backend's bytes, exactly.
    bytes: Vec<u8>,
    /// Written this many bytes at a time (the proxy then reads the answer
    /// in many small reads), or all at once.
    piece: Option<usize>,
    /// What the backend does next.
    then: Then,
}

fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>, then: Then) -> Case {
    Case { name: name.into(), method: "GET", bytes: bytes.into(), piece: None, then }
}

impl Case {
    fn head(mut self) -> Case {
        self.method = "HEAD";
        self
    }

    fn in_pieces(mut self, n: usize) -> Case {
        self.piece = Some(n);
        self
    }
}

/// The corpus.
fn corpus() -> Vec<Case> {
    use Then::*;
    let mut c = vec![
        // ---- Content-Length ----
        case("content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", Keep),
        case("content-length zero", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Keep),
        case("content-length leading zeros", "HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello", Keep),
        case("content-length list of equal values", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", Keep),
        case(
            "content-length twice, equal",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            Keep,
        ),
        case("content-length list of different values", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", Keep),
        case(
            "content-length twice, different",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            Keep,
        ),
        case("content-length negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", Keep),
        case("content-length with a plus sign", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", Keep),
        case("content-length in hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", Keep),
        case("content-length with spaces around", "HTTP/1.1 200 OK\r\nContent-Length:   5  \r\n\r\nhello", Keep),
        case(
            "content-length overflowing u64",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
            Keep,
        ),
        case("content-length empty", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhello", Close),
        case("content-length shorter than the body", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhello", Keep),
        case("content-length longer than the body, then close", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", Close),
        case(
            "content-length beside chunked",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Keep,
        ),
        case(
            "content-length body in one-byte pieces",
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
            Keep,
        )
        .in_pieces(1),
        // ---- chunked ----
        case("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Keep),
        case(
            "chunked, several chunks in three-byte pieces",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
            Keep,
        )
        .in_pieces(3),
        case(
            "chunked with extensions",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0;last\r\n\r\n",
            Keep,
        ),
        case(
            "chunked with a quoted extension",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b c;d\"\r\nhello\r\n0\r\n\r\n",
            Keep,
        ),
        case(
            "chunked with upper-case and zero-padded sizes",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n000B\r\nhello world\r\n0\r\n\r\n",
            Keep,
        ),
        case(
            "chunked with trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n",
            Keep,
        ),
        case("chunked, capitalised coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Keep),
        case(
            "chunked twice",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Keep,
        ),
        case(
            "gzip then chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Keep,
        ),
        case("gzip without chunked, close-delimited", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", Close),
        case("invalid chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", Keep),
        case(
            "chunk size overflowing u64",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            Keep,
        ),
        case(
            "chunk data longer than its size",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
            Keep,
        ),
        case("chunked with bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", Keep),
        case("chunked, close before the last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", Close),
        case("chunked, close inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello", Close),
        case(
            "chunked, close inside the trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 4",
            Close,
        ),
        // ---- bare LF and odd heads ----
        case("bare LF head", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", Keep),
        case("mixed CRLF and LF head", "HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: 1\r\n\nok", Keep),
        case("bare CR in a header value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("status line without a reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("status 999", "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("two-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("lower-case protocol", "http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("HTTP/2.0 status line", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("garbage status line", "NOT HTTP AT ALL\r\n\r\n", Close),
        case("space before a colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", Keep),
        case("header line without a colon", "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok", Keep),
        case("NUL in a header value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok", Keep),
        case(
            "obsolete line folding",
            "HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
            Keep,
        ),
        case("folding on the first header line", "HTTP/1.1 200 OK\r\n X-A: a\r\nContent-Length: 2\r\n\r\nok", Keep),
        case(
            "hop-by-hop and connection-named headers",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok",
            Keep,
        ),
        // ---- 1xx ----
        case("100 continue before the answer", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Keep),
        case(
            "103 early hints before the answer",
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Keep,
        ),
        case(
            "two 1xx before the answer",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Keep,
        ),
        case("1xx, then close", "HTTP/1.1 100 Continue\r\n\r\n", Close),
        case("101 to a request that asked for no upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n", Keep),
        // ---- no-body statuses and HEAD ----
        case("204 with a content-length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", Keep),
        case("204 with chunked", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", Keep),
        case("304 with a content-length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n", Keep),
        case("HEAD with a content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Keep).head(),
        case("HEAD with chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Keep).head(),
        case("HEAD without framing", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", Keep).head(),
        // ---- close-delimited and HTTP/1.0 ----
        case("close-delimited", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhello to the close", Close),
        case("close-delimited, empty", "HTTP/1.1 200 OK\r\n\r\n", Close),
        case("HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\n\r\nhello", Close),
        case("HTTP/1.0 with a content-length", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", Keep),
        case(
            "HTTP/1.0 with keep-alive",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
            Keep,
        ),
        case("connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", Keep),
        // ---- stalls: the request timeout ----
        case("stall before any byte", "", Stall),
        case("stall inside the head", "HTTP/1.1 200 OK\r\nContent-Le", Stall),
        case("stall after a 1xx", "HTTP/1.1 100 Continue\r\n\r\n", Stall),
        case("stall inside the body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", Stall),
    ];

    // Generated: a response cut at every stage, then closed. Every offset
    // of a head with a body and a trailer-carrying chunked answer.
    let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello";
    for at in 0..full.len() {
        c.push(case(format!("close after {at} bytes of a content-length answer"), &full[..at], Close));
    }
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    let body_at = chunked.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for at in body_at..chunked.len() {
        c.push(case(format!("close after {at} bytes of a chunked answer"), &chunked[..at], Close));
    }

    // Generated: header counts around the limit, and head sizes around it.
    for count in [99, 100, 101, 300, 1000] {
        let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
        for i in 1..count {
            head.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        c.push(case(format!("{count} header fields"), format!("{head}\r\nok"), Keep));
    }
    for kib in [8, 64, 390, 410, 1100] {
        let value = "v".repeat(kib * 1024);
        c.push(case(
            format!("a {kib} KiB header"),
            format!("HTTP/1.1 200 OK\r\nX-Big: {value}\r\nContent-Length: 2\r\n\r\nok"),
            Keep,
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for case in &c {
        assert!(names.insert(case.name.clone()), "two cases named {}", case.name);
    }
    c
}

/// A raw backend answering `/case` with the case's bytes and every other
/// request with [`OK`]; it records the connection each request came on.
async fn backend(case: &Case) -> RawUpstream {
    let then = match case.then {
        Then::Keep => support::raw_upstream::Then::KeepAlive,
        Then::Close => support::raw_upstream::Then::Close,
        Then::Stall => support::raw_upstream::Then::Stall,
    };
    let answer = Reply { bytes: case.bytes.clone(), piece: case.piece, then };
    RawUpstream::scripted(move |_, request| if request.path() == "/case" { answer.clone() } else { Reply::keep(OK) })
        .await
}

// ---------------------------------------------------------------------------
// The two paths and their outcome.
// ---------------------------------------------------------------------------

/// Which upstream client carries the case's request.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// No request body: the inline client.
    Inline,
    /// A request body: hyper's client.
    Hyper,
}

/// What the proxy's client saw of one case.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    /// The status, or `None` when no response head came or the answer was
    /// cut short (see `run`).
    status: Option<u16>,
    /// End-to-end headers, lower-cased, sorted (`date` left out).
    headers: Vec<(String, String)>,
    /// The body, or `None` when it ended in an error (cut short).
    body: Option<Vec<u8>>,
    /// Trailer fields, lower-cased, sorted.
    trailers: Vec<(String, String)>,
    /// Whether the upstream connection carried the next request.
    reused: bool,
}

/// Send `case` through a fresh backend and proxy over `path`; then a plain
/// request, which must get `200 ok`.
async fn run(case: Case, path: Path) -> Outcome {
    let backend = backend(&case).await;
    let config = Config::one_pool(&[backend.addr]).server(&format!("request_timeout = \"{REQUEST_TIMEOUT}\""));
    let proxy = TestProxy::start(&config.build()).await;
    let client = roomy_client();
    let body = match path {
        Path::Inline => Bytes::new(),
        Path::Hyper => Bytes::from_static(b"payload"),
    };
    let method = match (case.method, path) {
        ("GET", Path::Hyper) => "POST",
        (method, _) => method,
    };
    let request = Request::builder().method(method).uri(proxy.url("/case")).body(Full::new(body.clone())).unwrap();
    let mut outcome = Outcome { status: None, headers: Vec::new(), body: None, trailers: Vec::new(), reused: false };
    let answer = timeout(DEADLINE, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{} over {path:?}: no answer within {DEADLINE:?}", case.name));
    if let Ok(response) = answer {
        let (parts, incoming) = response.into_parts();
        outcome.status = Some(parts.status.as_u16());
        outcome.headers = fields(&parts.headers);
        let collected = timeout(DEADLINE, incoming.collect())
            .await
            .unwrap_or_else(|_| panic!("{} over {path:?}: body did not end within {DEADLINE:?}", case.name));
        if let Ok(collected) = collected {
            outcome.trailers = collected.trailers().map(fields).unwrap_or_default();
            outcome.body = Some(collected.to_bytes().to_vec());
        }
    }
    if outcome.body.is_none() {
        // The proxy aborted the client's connection mid-answer. Whether the
        // client saw the head first depends on whether the proxy's write of
        // it went out before the abort, a race on the server's side that
        // neither upstream client decides: both readings are one outcome.
        outcome.status = None;
        outcome.headers.clear();
    }

    // The next request: a plain one of the same kind, on a new client
    // connection (the old one may be closed), always answered `200 ok`.
    let after_method = if matches!(path, Path::Hyper) { "POST" } else { "GET" };
    let request = Request::builder().method(after_method).uri(proxy.url("/after")).body(Full::new(body)).unwrap();
    let response = timeout(DEADLINE, roomy_client().request(request))
        .await
        .unwrap_or_else(|_| panic!("{} over {path:?}: the next request got no answer", case.name))
        .unwrap_or_else(|e| panic!("{} over {path:?}: the next request failed: {e}", case.name));
    let status = response.status();
    let after = timeout(DEADLINE, response.into_body().collect()).await.ok().and_then(Result::ok);
    let after = after.map(|c| c.to_bytes());
    assert!(
        status == 200 && after.as_deref() == Some(&b"ok"[..]),
        "{} over {path:?}: the next request got {status} {after:?}",
        case.name
    );
    let log = backend.requests();
    let conn_of = |p: &str| log.iter().find(|r| r.path() == p).map(|r| r.conn);
    outcome.reused = conn_of("/case").is_some() && conn_of("/case") == conn_of("/after");
    outcome
}

/// A keep-alive client that reads up to 1,000 header fields, so the
/// header-count cases meet the proxy's limit, not the client's.
fn roomy_client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http1_max_headers(1000)
        .build_http()
}

/// The fields of `headers` that matter to a client: lower-cased names,
/// sorted, without `date` (set by whoever answers, at its own time).
fn fields(headers: &http::HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != http::header::DATE)
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inline_and_hyper_clients_agree_on_every_framing() {
    let corpus = corpus();
    assert!(corpus.len() >= 60, "the corpus has only {} cases", corpus.len());
    let known: BTreeMap<&str, &str> = KNOWN.iter().copied().collect();
    for name in known.keys() {
        assert!(corpus.iter().any(|c| c.name == *name), "KNOWN names {name:?}, which is no case of the corpus");
    }

    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut runs = JoinSet::new();
    for case in corpus {
        let permits = permits.clone();
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let inline = run(case.clone(), Path::Inline).await;
            let hyper = run(case.clone(), Path::Hyper).await;
            (case.name, inline, hyper)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = runs.join_next().await {
        results.push(done.expect("a case panicked"));
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut problems = Vec::new();
    for (name, inline, hyper) in &results {
        match (inline == hyper, known.get(name.as_str())) {
            (true, None) | (false, Some(_)) => {}
            (false, None) => {
                problems.push(format!("{name}: the clients differ\n  inline: {inline:?}\n  hyper:  {hyper:?}"))
            }
            (true, Some(why)) => problems.push(format!(
                "{name}: listed in KNOWN ({why}) but the clients now agree on {inline:?}: remove it from KNOWN"
            )),
        }
    }
    assert!(problems.is_empty(), "{} of {} cases:\n{}", problems.len(), results.len(), problems.join("\n"));
}
