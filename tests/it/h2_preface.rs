//! An invalid HTTP/2 connection preface is a connection error of type
//! PROTOCOL_ERROR (RFC 9113 §3.4): the proxy answers `GOAWAY(PROTOCOL_ERROR)`
//! and closes, over h2c (prior knowledge) and over TLS (ALPN `h2`) alike.
//! On the cleartext listener, which serves HTTP/1.1 beside h2c, a first
//! line that is no HTTP/1.x request line either is an invalid preface too
//! (what h2spec's case 3.5/2 sends), while a real HTTP/1 request, however
//! its bytes arrive, is served as before.
//! Raw clients, so the test sees every frame the proxy sends.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const GOAWAY: u8 = 0x7;
const SETTINGS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;

/// The preface's first line right, its tail (`SM\r\n\r\n`) wrong.
const BAD_TAIL: &[u8] = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
/// What the h2spec conformance suite sends in its case 3.5/2.
const H2SPEC: &[u8] = b"INVALID CONNECTION PREFACE\r\n\r\n";

/// Every frame the proxy sends until it closes (or `DEADLINE`): kinds and
/// GOAWAY error codes, and whether the connection closed in time.
async fn frames_until_close(stream: &mut (impl AsyncRead + Unpin)) -> (Vec<(u8, Option<u32>)>, bool) {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let mut head = [0u8; 9];
        match timeout_at(end, stream.read_exact(&mut head)).await {
            Err(_) => return (seen, false),
            Ok(Err(_)) => return (seen, true),
            Ok(Ok(_)) => {}
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        match timeout_at(end, stream.read_exact(&mut payload)).await {
            Err(_) => return (seen, false),
            Ok(Err(_)) => return (seen, true),
            Ok(Ok(_)) => {}
        }
        let code = (head[3] == GOAWAY && len >= 8)
            .then(|| u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        seen.push((head[3], code));
    }
}

/// Send `bytes`, keep the write half open (only the proxy may end the
/// connection), and assert a `GOAWAY(PROTOCOL_ERROR)` then the close.
async fn assert_goaway_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: &[u8], what: &str) {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    let (frames, closed) = frames_until_close(&mut stream).await;
    assert!(
        frames.iter().any(|&(kind, code)| kind == GOAWAY && code == Some(PROTOCOL_ERROR)),
        "{what}: no GOAWAY(PROTOCOL_ERROR) among {frames:?}"
    );
    assert!(closed, "{what}: the connection stayed open after {frames:?}");
}

fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A valid preface, then a first frame that is not SETTINGS (RFC 9113 §3.4:
/// the preface includes the client's SETTINGS).
fn preface_then_garbage() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(GOAWAY + 0x10, 0, b"garbage!"));
    out.extend(frame(SETTINGS, 0, &[]));
    out
}

async fn h2c_proxy() -> (RawUpstream, TestProxy) {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    (upstream, proxy)
}

#[tokio::test]
async fn h2c_preface_with_a_bad_tail_gets_goaway_protocol_error() {
    let (_upstream, proxy) = h2c_proxy().await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    assert_goaway_and_close(stream, BAD_TAIL, "h2c, bad tail").await;
    // The listener serves the next client as before.
    assert_eq!(get(&client(), &proxy.url("/after"), &[]).await.status, 200);
}

#[tokio::test]
async fn h2c_preface_then_a_frame_other_than_settings_gets_goaway_protocol_error() {
    let (_upstream, proxy) = h2c_proxy().await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    assert_goaway_and_close(stream, &preface_then_garbage(), "h2c, garbage after the preface").await;
}

/// h2spec 3.5/2 over h2c: its invalid preface does not start with `PRI `,
/// so the listener took the connection for HTTP/1; it is no request line
/// either, and gets the GOAWAY, not an HTTP/1.1 `400` (which an HTTP/2
/// client reads as a frame header). So does a request line of another
/// version, and a line that arrives a byte at a time.
#[tokio::test]
async fn h2c_first_line_that_is_no_http1_request_line_gets_goaway_protocol_error() {
    let (upstream, proxy) = h2c_proxy().await;
    for (what, bytes) in [("h2spec 3.5/2", H2SPEC), ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\n\r\n")] {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert_goaway_and_close(stream, bytes, &format!("h2c, {what}")).await;
    }
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for byte in H2SPEC {
        // The proxy may refuse (and close) before the last byte is written.
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
    let (frames, closed) = frames_until_close(&mut stream).await;
    assert!(frames.contains(&(GOAWAY, Some(PROTOCOL_ERROR))) && closed, "h2c, a byte at a time: {frames:?}");
    assert!(upstream.requests().is_empty(), "nothing reached the backend");
    // The listener serves the next client as before.
    assert_eq!(get(&client(), &proxy.url("/after"), &[]).await.status, 200);
}

/// What the check lets through: an HTTP/1 request after empty lines
/// (RFC 9112 §2.2), one written a byte at a time, and on a connection that
/// has spoken HTTP/1, a malformed request later on is HTTP/1's to refuse
/// with `400`.
#[tokio::test]
async fn http1_request_lines_are_served_however_they_arrive() {
    let (upstream, proxy) = h2c_proxy().await;
    let after_empty_lines =
        exchange(proxy.addr, b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(after_empty_lines.only().status, 200, "{}", after_empty_lines.raw);

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for byte in b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" {
        stream.write_all(&[*byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    stream.write_all(b"GET /c HTTP/2.0\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 400, "a bad second request");
    let (rest, closed) = read_until_closed(&mut stream, DEADLINE).await;
    assert!(closed && rest.is_empty(), "after the 400: {}", String::from_utf8_lossy(&rest));
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/a", "/b"]);
}

/// A proxy with an HTTPS listener (a self-signed certificate) and a client
/// config that trusts it and asks ALPN for `h2`.
async fn tls_proxy() -> (tempfile::TempDir, RawUpstream, TestProxy, Arc<rustls::ClientConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let upstream = RawUpstream::ok().await;
    let tls = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"",
        dir.path().join("tls.crt").display(),
        dir.path().join("tls.key").display()
    );
    let config = Config::new().raw(&tls).pool("app", &[upstream.addr]).route("app", "app = 1");
    let proxy = TestProxy::start(&config.build()).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    (dir, upstream, proxy, Arc::new(client))
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    stream
}

#[tokio::test]
async fn tls_invalid_prefaces_get_goaway_protocol_error() {
    let (_dir, _upstream, proxy, client) = tls_proxy().await;
    let addr = proxy.tls_addr.expect("tls listener");
    for (what, bytes) in
        [("bad tail", BAD_TAIL.to_vec()), ("h2spec 3.5/2", H2SPEC.to_vec()), ("garbage", preface_then_garbage())]
    {
        let stream = tls_connect(addr, client.clone()).await;
        assert_goaway_and_close(stream, &bytes, &format!("TLS, {what}")).await;
    }
}
