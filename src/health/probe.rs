//! One active probe: `GET path` on a *new* connection to the backend —
//! never one of the request pool's connections, so a probe can neither
//! steal a warm connection from a request nor leave a half-read answer on
//! one. A 2xx head within `timeout` (connect included) is a success; any
//! other status, a refused connect or a timeout is a failure.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{BackendAddr, Scheme};
use crate::pool::Transport;

/// `User-Agent` of every probe, so backends can tell probes from traffic.
pub const USER_AGENT: &str = "cutover-health";

/// Why a probe counted as a failure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The backend answered, but not with a 2xx.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The TCP connect (or name lookup) failed.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// No response head within the probe's timeout, connect included.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange failed (bad handshake, reset, malformed answer).
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The backend closed the connection without answering.
    #[error("connection closed before an answer")]
    Closed,
    /// The probe request could not be built from the config.
    #[error("cannot build the probe request: {0}")]
    Request(#[source] http::Error),
    /// The backend needs a transport probes do not speak yet.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
}

/// Probe `addr` once: `GET path` on a new connection, with `Host: <authority>`
/// and `User-Agent: cutover-health`. `Ok` carries the 2xx status; `timeout`
/// covers connect, handshake and the response head. The body is not read:
/// the head decides, and the connection is closed when this returns.
pub async fn probe(
    addr: &BackendAddr,
    path: &str,
    timeout: Duration,
    transport: &Transport,
) -> Result<StatusCode, ProbeError> {
    if addr.scheme == Scheme::Https && transport.tls.is_none() {
        return Err(ProbeError::Unsupported("https backend without a TLS client config"));
    }
    let tls = if addr.scheme == Scheme::Https { transport.tls.as_ref() } else { None };
    let h2 = transport.protocol == crate::config::UpstreamProtocol::H2;
    let request = Request::get(path)
        .header(header::HOST, addr.authority.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let attempt = async {
        let resolved = addr.authority.parse::<SocketAddr>().ok();
        let unacknowledged = crate::pool::conn::UNACKNOWLEDGED_FLOOR;
        let stream = crate::pool::conn::open_stream(addr, resolved, timeout, unacknowledged, tls).await.map_err(
            |e| match e {
                crate::pool::ConnectError::Io { source, .. } | crate::pool::ConnectError::Tls { source, .. } => {
                    ProbeError::Connect(source)
                }
                crate::pool::ConnectError::Timeout { timeout, .. } => ProbeError::Timeout(timeout),
                crate::pool::ConnectError::Handshake { source, .. } => ProbeError::Http(source),
            },
        )?;
        match stream {
            crate::pool::conn::Stream::Plain(io) => exchange(io, request, h2).await,
            crate::pool::conn::Stream::Tls(io) => exchange(io, request, h2).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) if status.is_success() => Ok(status),
        Ok(Ok(status)) => Err(ProbeError::Status(status)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// Send `request` on `io` and return the answer's status. The connection is
/// driven here rather than in a spawned task: when this future ends
/// (answer, error or timeout) the socket closes with it, and no probe can
/// leave a task behind.
async fn exchange<I>(io: I, mut request: Request<Empty<Bytes>>, h2: bool) -> Result<StatusCode, ProbeError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(ProbeError::Http)?;
        let mut connection = Box::pin(connection);
        let response = sender.send_request(request);
        tokio::pin!(response);
        return tokio::select! {
            answer = &mut response => answer.map(|r| r.status()).map_err(ProbeError::Http),
            ended = &mut connection => Err(match ended { Err(e) => ProbeError::Http(e), Ok(()) => ProbeError::Closed }),
        };
    }
    // The connection is used once; say so, so the backend does not keep a
    // keep-alive slot for it.
    request.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(ProbeError::Http)?;
    let mut connection = Box::pin(connection);
    let response = sender.send_request(request);
    tokio::pin!(response);
    let ended = tokio::select! {
        biased;
        answer = &mut response => return answer.map(|r| r.status()).map_err(ProbeError::Http),
        ended = &mut connection => ended,
    };
    // The connection can finish in the same poll that delivered the answer
    // (the backend honoured `Connection: close`): the answer may be waiting.
    // With the connection gone, the response future resolves either way.
    drop(connection);
    match response.await {
        Ok(answer) => Ok(answer.status()),
        Err(_) => Err(match ended {
            Err(e) => ProbeError::Http(e),
            Ok(()) => ProbeError::Closed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    // --- one probe, against real sockets ---

    /// A one-shot server on 127.0.0.1 that reads a request head, answers
    /// `reply` (or nothing, when `None`), and hands back what it read.
    async fn one_shot(reply: Option<&'static str>) -> (SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            match reply {
                Some(reply) => stream.write_all(reply.as_bytes()).await.unwrap(),
                // Hold the connection open without answering.
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, task)
    }

    fn http(addr: SocketAddr) -> BackendAddr {
        BackendAddr { scheme: Scheme::Http, authority: addr.to_string() }
    }

    #[tokio::test]
    async fn probe_sends_get_with_host_and_user_agent_and_accepts_2xx() {
        let (addr, server) = one_shot(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
        let status = probe(&http(addr), "/healthz?deep=1", Duration::from_secs(5), &Transport::plain()).await;
        assert_eq!(status.unwrap(), StatusCode::NO_CONTENT);
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz?deep=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(head.contains("user-agent: cutover-health\r\n"), "{head}");
    }

    #[tokio::test]
    async fn probe_fails_on_non_2xx() {
        let (addr, _server) = one_shot(Some("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")).await;
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Status(s) if s == StatusCode::SERVICE_UNAVAILABLE), "{err}");
        assert_eq!(err.to_string(), "answered 503 Service Unavailable");
    }

    #[tokio::test]
    async fn probe_fails_on_refused_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect(_)), "{err}");
    }

    #[tokio::test]
    async fn probe_times_out_on_a_silent_backend() {
        let (addr, _server) = one_shot(None).await;
        let err = probe(&http(addr), "/healthz", Duration::from_millis(100), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn probe_fails_when_the_backend_hangs_up() {
        let (addr, _server) = one_shot(Some("")).await;
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Http(_) | ProbeError::Closed), "{err}");
    }

    #[tokio::test]
    async fn probe_reports_tls_backends_as_unsupported() {
        let addr = BackendAddr { scheme: Scheme::Https, authority: "127.0.0.1:1".into() };
        let err = probe(&addr, "/healthz", Duration::from_secs(1), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Unsupported(_)), "{err}");
    }
}
