//! TLS termination with ALPN (HTTP/1.1 and h2), certificate rotation
//! without dropping connections, and `https://` and HTTP/2 backends.
//! Certificates are made in the test with rcgen.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(15);

struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

/// A self-signed certificate for 127.0.0.1 and localhost.
fn make_cert(label: &str) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, label);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Cert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
}

fn write_cert(dir: &Path, cert: &Cert) {
    // Atomic, as cert-manager and kubelet do.
    for (name, text) in [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn client_config(trusted: &[&Cert], alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

fn peer_cert(stream: &TlsStream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// One HTTP/1.1 connection over TLS, kept open.
async fn h1_over(stream: TlsStream) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn h1_get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> (StatusCode, String) {
    sender.ready().await.unwrap();
    let req = Request::get("/").header("host", "secure.example").body(Empty::new()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    (status, String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

/// A proxy whose HTTPS listener serves a new certificate labelled
/// `label`, from files in `dir` (so a test can rotate them), in front of
/// an upstream named `app`.
struct TlsProxy {
    dir: tempfile::TempDir,
    cert: Cert,
    upstream: Upstream,
    proxy: TestProxy,
    addr: SocketAddr,
}

async fn start_tls_proxy(label: &str) -> TlsProxy {
    start_tls_proxy_with(label, "").await
}

/// [`start_tls_proxy`], with more `[server]` settings.
async fn start_tls_proxy_with(label: &str, server: &str) -> TlsProxy {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(label);
    write_cert(dir.path(), &cert);
    let upstream = Upstream::named("app").await;
    let proxy = tls_proxy(dir.path(), &upstream, server).await;
    let addr = proxy.tls_addr.expect("tls listener");
    TlsProxy { dir, cert, upstream, proxy, addr }
}

async fn tls_proxy(dir: &Path, upstream: &Upstream, server: &str) -> TestProxy {
    let tls = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    );
    let config = Config::new().server(server).raw(&tls).pool("app", &[upstream.addr]).route("app", "app = 1");
    TestProxy::start(&config.build()).await
}

#[tokio::test]
async fn https_listener_serves_http1_and_h2_by_alpn() {
    let TlsProxy { dir: _dir, cert, upstream, proxy: _proxy, addr: tls_addr } = start_tls_proxy("first").await;

    let stream = tls_connect(tls_addr, client_config(&[&cert], b"http/1.1")).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_over(stream).await;
    assert_eq!(h1_get(&mut h1).await, (StatusCode::OK, "app".to_string()));
    assert_eq!(upstream.seen()[0].headers["x-forwarded-proto"], "https");

    let stream = tls_connect(tls_addr, client_config(&[&cert], b"h2")).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://secure.example/").body(Empty::<Bytes>::new()).unwrap();
    let res = h2.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "app");
    assert_eq!(upstream.seen()[1].headers["host"], "secure.example");

    // A client that offers no ALPN speaks HTTP/1.1.
    let mut no_alpn = (*client_config(&[&cert], b"http/1.1")).clone();
    no_alpn.alpn_protocols.clear();
    let stream = tls_connect(tls_addr, Arc::new(no_alpn)).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut h1 = h1_over(stream).await;
    assert_eq!(h1_get(&mut h1).await, (StatusCode::OK, "app".to_string()));
}

/// A client that opens a connection to the HTTPS listener and never
/// finishes its handshake (here: sends half a record header) is closed
/// after the handshake's 10 s, counted, and other clients are served.
#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let TlsProxy { dir: _dir, cert, upstream: _upstream, proxy, addr: tls_addr } = start_tls_proxy("stalled").await;

    let mut stalled = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a stalled handshake was not closed within 30 s: {read:?}");
    assert_eq!(client_timeouts(&proxy, "tls_handshake").await, 1.0, "the cut was not counted");

    let stream = tls_connect(tls_addr, client_config(&[&cert], b"http/1.1")).await.unwrap();
    let mut h1 = h1_over(stream).await;
    assert_eq!(h1_get(&mut h1).await, (StatusCode::OK, "app".to_string()));
}

/// A client that completes the handshake and then sends nothing is closed
/// after `header_read_timeout`, and counted as a connection that sent no
/// request, not as a slowloris.
#[tokio::test]
async fn a_silent_tls_connection_is_closed_and_counted_as_no_request() {
    use tokio::io::AsyncReadExt;
    let TlsProxy { dir: _dir, cert, upstream: _upstream, proxy, addr } =
        start_tls_proxy_with("silent", "header_read_timeout = \"500ms\"").await;
    let mut silent = tls_connect(addr, client_config(&[&cert], b"http/1.1")).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent TLS connection was not closed within 10 s: {read:?}");
    assert_eq!(client_timeouts(&proxy, "no_request").await, 1.0, "the cut was not counted");
    assert_eq!(client_timeouts(&proxy, "header_read").await, 0.0, "a silent connection counted as a slowloris");
}

#[tokio::test]
async fn a_rotated_certificate_applies_without_dropping_connections() {
    let TlsProxy { dir, cert: first, upstream: _upstream, proxy: _proxy, addr: tls_addr } =
        start_tls_proxy("first").await;
    let trust_both = |second: &Cert| client_config(&[&first, second], b"http/1.1");

    let stream = tls_connect(tls_addr, client_config(&[&first], b"http/1.1")).await.unwrap();
    assert_eq!(peer_cert(&stream), first.der);
    let mut old_connection = h1_over(stream).await;
    assert_eq!(h1_get(&mut old_connection).await.0, StatusCode::OK);

    let second = make_cert("second");
    write_cert(dir.path(), &second);
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let stream = tls_connect(tls_addr, trust_both(&second)).await.unwrap();
        if peer_cert(&stream) == second.der {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the rotation still works.
    assert_eq!(h1_get(&mut old_connection).await.0, StatusCode::OK);

    // A broken pair is rejected and the running certificate stays.
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stream = tls_connect(tls_addr, trust_both(&second)).await.unwrap();
    assert_eq!(peer_cert(&stream), second.der);
    let mut h1 = h1_over(stream).await;
    assert_eq!(h1_get(&mut h1).await.0, StatusCode::OK);
}

/// A TLS upstream (HTTP/1.1 or h2 by ALPN) on 127.0.0.1, answering its name
/// and the HTTP version it saw.
async fn tls_upstream(cert: &Cert, alpn: &[&[u8]]) -> SocketAddr {
    let certs = vec![cert.der.clone()];
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(text(StatusCode::OK, format!("secure {:?}", req.version())))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_backends_are_verified_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert("backend");
    std::fs::write(dir.path().join("ca.pem"), &cert.cert_pem).unwrap();
    let h1 = tls_upstream(&cert, &[b"http/1.1"]).await;
    let h2 = tls_upstream(&cert, &[b"h2"]).await;
    let ca = format!("ca_file = \"{}\"", dir.path().join("ca.pem").display());
    let config = Config::new()
        .pool_with("h1", &[format!("https://{h1}")], &ca)
        .pool_with("h2", &[format!("https://{h2}")], &format!("{ca}\nprotocol = \"h2\""))
        .pool("untrusted", &[format!("https://{h1}")])
        .route_with("one", "h1 = 1", "path_prefix = \"/one\"")
        .route_with("two", "h2 = 1", "path_prefix = \"/two\"")
        .route_with("bad", "untrusted = 1", "path_prefix = \"/bad\"");
    let proxy = TestProxy::start(&config.build()).await;
    let client = client();
    let one = get(&client, &proxy.url("/one"), &[]).await;
    assert_eq!((one.status, one.body.as_str()), (StatusCode::OK, "secure HTTP/1.1"));
    let two = get(&client, &proxy.url("/two"), &[]).await;
    assert_eq!((two.status, two.body.as_str()), (StatusCode::OK, "secure HTTP/2.0"));
    // Without the CA, the self-signed backend fails verification: 502.
    assert_eq!(get(&client, &proxy.url("/bad"), &[]).await.status, StatusCode::BAD_GATEWAY);
}

/// A CA file rotated in place (same path, new certificate) is read at the
/// next reload: the pool's `https://` backends become new backends that
/// trust it, where the kept ones went on trusting the old one.
#[tokio::test]
async fn a_ca_file_rotated_in_place_is_trusted_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (make_cert("backend"), make_cert("backend"));
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &old.cert_pem).unwrap();
    let backend = tls_upstream(&new, &[b"http/1.1"]).await;
    let ca = format!("ca_file = \"{}\"", ca_path.display());
    let config = Config::new().pool_with("secure", &[format!("https://{backend}")], &ca).route("app", "secure = 1");
    let proxy = TestProxy::start(&config.build()).await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, StatusCode::BAD_GATEWAY, "signed by another CA");
    std::fs::write(&ca_path, &new.cert_pem).unwrap();
    let text = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(&proxy.config_path, format!("{text}\n# the CA was rotated\n")).unwrap();
    let reloaded = post(&proxy.admin_url("/reload")).await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    let answer = get(&client, &proxy.url("/"), &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "secure HTTP/1.1"));
}

/// A pool mixing an `https://` backend with a plain one: body-less
/// requests to the plain one take the inline client, and `HEAD` keeps its
/// body-less answer there; requests with a body go through hyper's client
/// to either.
#[tokio::test]
async fn a_pool_mixing_https_and_plain_backends_serves_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert("backend");
    std::fs::write(dir.path().join("ca.pem"), &cert.cert_pem).unwrap();
    let secure = tls_upstream(&cert, &[b"http/1.1"]).await;
    let plain = Upstream::named("plain").await;
    let ca = format!("ca_file = \"{}\"", dir.path().join("ca.pem").display());
    let backends = [format!("https://{secure}"), plain.addr.to_string()];
    let proxy =
        TestProxy::start(&Config::new().pool_with("mixed", &backends, &ca).route("app", "mixed = 1").build()).await;
    let client = client();
    let mut bodies = std::collections::BTreeSet::new();
    for i in 0..8 {
        let answer = get(&client, &proxy.url(&format!("/get/{i}")), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "GET {i}: {}", answer.body);
        bodies.insert(answer.body);
        let answer = post(&proxy.url(&format!("/post/{i}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "POST {i}: {}", answer.body);
        bodies.insert(answer.body);
    }
    let expected: std::collections::BTreeSet<String> = ["plain", "secure HTTP/1.1"].map(String::from).into();
    assert_eq!(bodies, expected, "both backends served");
    let before = plain.hits();
    for _ in 0..4 {
        let request = Request::head(proxy.url("/head")).body(http_body_util::Full::new(Bytes::new())).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
            .await
            .expect("HEAD timed out")
            .expect("HEAD failed");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.expect("HEAD body").to_bytes();
        assert!(body.is_empty(), "a HEAD answer has no body");
    }
    assert!(plain.hits() > before, "the plain backend answered some HEADs");
}

#[tokio::test]
async fn an_h2c_backend_gets_requests_over_one_shared_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req.headers().get("host").map(|h| h.to_str().unwrap().to_string());
                    let authority = req.uri().authority().map(|a| a.to_string());
                    let body = format!("{:?} host={host:?} authority={authority:?}", req.version());
                    Ok::<_, std::convert::Infallible>(text(StatusCode::OK, body))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let config = Config::new().pool_with("grpc", &[addr], "protocol = \"h2\"").route("app", "grpc = 1");
    let proxy = TestProxy::start(&config.build()).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = proxy.url("/x");
        tasks.push(tokio::spawn(async move { get(&client(), &url, &[("host", "api.example")]).await }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.body.starts_with("HTTP/2.0"), "{}", a.body);
        assert!(a.body.contains("api.example"), "{}", a.body);
    }
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) <= 2, "h2 connections are not shared");
}
