//! A backend that answers a request before reading its body (a `401` to
//! an upload): the upstream connection is released when the answer ends,
//! while the proxy is still sending the upload on it. The next request to
//! that backend must not wait on it for the rest of the upload.

use crate::support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// A raw backend that answers each connection's first request head at
/// once with a keep-alive `401`, then reads and drops whatever follows.
async fn answers_early() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_waited_on() {
    let backend = answers_early().await;
    let config = Config::new()
        .raw("[server]\nbody_read_timeout = \"300s\"\nrequest_timeout = \"300s\"\n")
        .pool("app", &[backend])
        .route("app", "app = 100")
        .build();
    let proxy = TestProxy::start(&config).await;
    // The upload: a head promising a megabyte, a first piece, then nothing
    // more for as long as the test runs.
    let mut uploader = TcpStream::connect(proxy.addr).await.expect("connect");
    let head = format!("POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n{}", "x".repeat(1000));
    uploader.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"no") {
        let n = tokio::time::timeout(Duration::from_secs(20), uploader.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&answer));
    // Another request with a body (a hyper connection's, as the upload's)
    // is answered while the upload is still open.
    let other = tokio::time::timeout(Duration::from_secs(20), async {
        let req = http::Request::post(proxy.url("/other"))
            .body(http_body_util::Full::new(bytes::Bytes::from("hello")))
            .unwrap();
        client().request(req).await.expect("request").status()
    })
    .await
    .expect("the second request waited on the upload's connection");
    assert_eq!(other, 401);
    drop(uploader);
    proxy.stop().await;
}
