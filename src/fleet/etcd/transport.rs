//! HTTP/1.1 to etcd's JSON gateway: connections, endpoint failover, auth.
//!
//! Each call is a `POST` of a JSON body to a `/v3/...` path. Unary calls
//! reuse idle keep-alive connections to the endpoint that answered last;
//! streams (watch) get a connection of their own, because the gateway holds
//! the response open for as long as the stream lives.
//!
//! When an endpoint cannot be reached (refused, TLS failure, connect
//! timeout, the connection closed before an answer, or etcd answering
//! UNAVAILABLE) the next one is tried, and the one that answers becomes the
//! first choice. A connection that is not up within a second counts as
//! unreachable too, so a partitioned first endpoint leaves time for the
//! others; every call, failover included, is bounded by the client's timeout. Connections
//! have TCP keepalive on, so a watch stream to a host that vanished without
//! closing (a partition) is detected in seconds, not hours.
//!
//! With credentials, the client authenticates once (`/v3/auth/authenticate`)
//! and sends the token in the `Authorization` header (no `Bearer`: etcd
//! wants the bare token); a call refused for a bad or expired token
//! authenticates again and is retried once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::wire::{AuthResponse, UnaryError};
use super::{Endpoint, EtcdError};

/// Longest a connection (TCP and TLS handshake) may take before the next
/// endpoint is tried; at most half the call's timeout, so an unreachable
/// first endpoint leaves time for the others.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest answer to a unary call read into memory: far above what
/// cutover's reads return (its keys are small records, a few per replica
/// and pool), and a bound on what an endpoint that misbehaves, or is not
/// etcd, can make a replica hold. A larger answer fails the call on that
/// endpoint.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Idle TCP time before the first keepalive probe on an etcd connection.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes before the kernel closes the connection.
const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Credentials for etcd's auth.
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Sender = SendRequest<Full<Bytes>>;

/// The shared connection state of one [`super::Client`].
pub(crate) struct Transport {
    endpoints: Vec<Endpoint>,
    tls: Option<tokio_rustls::TlsConnector>,
    pub(crate) timeout: Duration,
    credentials: Option<Credentials>,
    /// Index of the endpoint that answered last: tried first.
    preferred: AtomicUsize,
    /// Idle keep-alive connections, by endpoint index.
    idle: Mutex<Vec<(usize, Sender)>>,
    token: Mutex<Option<String>>,
}

/// A failure on one endpoint: try the next, or stop.
enum Attempt {
    Next(String),
    Stop(EtcdError),
}

impl Transport {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
        credentials: Option<Credentials>,
    ) -> Result<Transport, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Setup("no etcd endpoint given".into()));
        }
        if endpoints.iter().any(|e| e.tls) && tls.is_none() {
            return Err(EtcdError::Setup("an https:// endpoint needs a TLS client config".into()));
        }
        Ok(Transport {
            endpoints,
            tls: tls.map(tokio_rustls::TlsConnector::from),
            timeout,
            credentials,
            preferred: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            token: Mutex::new(None),
        })
    }

    /// A unary call: POST `body` to `path`, decode the answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &serde_json::Value,
    ) -> Result<T, EtcdError> {
        let body = Bytes::from(body.to_string());
        let bytes = match self.call_authed(path, body.clone()).await {
            Err(e) if e.is_bad_token() && self.credentials.is_some() => {
                self.forget_token();
                self.call_authed(path, body).await?
            }
            other => other?,
        };
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode { path, message: e.to_string() })
    }

    /// Open a stream: POST `body` to `path` on a connection of its own and
    /// hand back the response body once the status says it is a stream.
    pub(crate) async fn stream(&self, path: &'static str, body: &serde_json::Value) -> Result<Incoming, EtcdError> {
        let body = Bytes::from(body.to_string());
        let token = self.token(path).await?;
        let result = self.stream_once(path, body.clone(), token).await;
        match result {
            Err(e) if e.is_bad_token() && self.credentials.is_some() => {
                self.forget_token();
                let token = self.token(path).await?;
                self.stream_once(path, body, token).await
            }
            other => other,
        }
    }

    async fn stream_once(&self, path: &'static str, body: Bytes, token: Option<String>) -> Result<Incoming, EtcdError> {
        let attempt = |index: usize| {
            let body = body.clone();
            let token = token.clone();
            async move {
                let mut sender = self.dial(index).await.map_err(Attempt::Next)?;
                let request = self.request(index, path, body, token.as_deref()).map_err(Attempt::Stop)?;
                let response = sender.send_request(request).await.map_err(|e| Attempt::Next(e.to_string()))?;
                if response.status() == http::StatusCode::OK {
                    Ok(response.into_body())
                } else {
                    let status = response.status().as_u16();
                    let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Err(classify(server_error(path, status, &bytes)))
                }
            }
        };
        self.over_endpoints(path, attempt).await
    }

    async fn call_authed(&self, path: &'static str, body: Bytes) -> Result<Bytes, EtcdError> {
        let token = self.token(path).await?;
        self.exchange(path, body, token).await
    }

    /// POST on the preferred endpoint, falling over to the others.
    async fn exchange(&self, path: &'static str, body: Bytes, token: Option<String>) -> Result<Bytes, EtcdError> {
        let attempt = |index: usize| {
            let body = body.clone();
            let token = token.clone();
            async move {
                let request = || self.request(index, path, body.clone(), token.as_deref()).map_err(Attempt::Stop);
                // An idle connection may have been closed by etcd meanwhile:
                // its failure sends the request again on a fresh one.
                let response = match self.take_idle(index).await {
                    Some(mut sender) => match sender.send_request(request()?).await {
                        Ok(response) => Some((sender, response)),
                        Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() => None,
                        Err(e) => return Err(Attempt::Next(e.to_string())),
                    },
                    None => None,
                };
                let (sender, response) = match response {
                    Some(pair) => pair,
                    None => {
                        let mut sender = self.dial(index).await.map_err(Attempt::Next)?;
                        let response =
                            sender.send_request(request()?).await.map_err(|e| Attempt::Next(e.to_string()))?;
                        (sender, response)
                    }
                };
                let status = response.status().as_u16();
                let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| Attempt::Next(format!("reading the answer: {e}")))?
                    .to_bytes();
                self.put_idle(index, sender);
                if status == 200 {
                    Ok(bytes)
                } else {
                    Err(classify(server_error(path, status, &bytes)))
                }
            }
        };
        self.over_endpoints(path, attempt).await
    }

    /// Run `attempt` on each endpoint from the preferred one until one
    /// answers, all within the timeout.
    async fn over_endpoints<T, F, Fut>(&self, path: &'static str, attempt: F) -> Result<T, EtcdError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let tries = async {
            let count = self.endpoints.len();
            let first = self.preferred.load(Ordering::Relaxed) % count;
            let mut last = String::new();
            for offset in 0..count {
                let index = (first + offset) % count;
                match attempt(index).await {
                    Ok(answer) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(Attempt::Stop(e)) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(Attempt::Next(why)) => {
                        tracing::debug!(endpoint = %self.endpoints[index], error = %why, path, "etcd endpoint failed");
                        last = format!("{}: {why}", self.endpoints[index]);
                    }
                }
            }
            Err(EtcdError::Unreachable { last })
        };
        tokio::time::timeout(self.timeout, tries)
            .await
            .map_err(|_| EtcdError::Timeout { path, timeout: self.timeout })?
    }

    fn request(
        &self,
        index: usize,
        path: &'static str,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<http::Request<Full<Bytes>>, EtcdError> {
        let mut builder = http::Request::post(path)
            .header(http::header::HOST, self.endpoints[index].authority())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header(http::header::AUTHORIZATION, token);
        }
        builder.body(Full::new(body)).map_err(|e| EtcdError::Setup(format!("cannot build a request: {e}")))
    }

    /// A new HTTP/1.1 connection to endpoint `index`, within the connect timeout.
    async fn dial(&self, index: usize) -> Result<Sender, String> {
        let limit = CONNECT_TIMEOUT.min(self.timeout / 2);
        tokio::time::timeout(limit, self.connect(index))
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {limit:?}")))
    }

    async fn connect(&self, index: usize) -> Result<Sender, String> {
        let endpoint = &self.endpoints[index];
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_PROBES);
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "cannot set TCP keepalive on an etcd connection");
        }
        let io: Box<dyn Io> = match (&self.tls, endpoint.tls) {
            (Some(connector), true) => {
                let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| format!("bad TLS name: {e}"))?;
                Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?)
            }
            _ => Box::new(tcp),
        };
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "etcd connection ended");
            }
        });
        Ok(sender)
    }

    async fn take_idle(&self, index: usize) -> Option<Sender> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().ok()?;
                let at = idle.iter().position(|(i, _)| *i == index)?;
                idle.swap_remove(at).1
            };
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, index: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            // A few per endpoint cover the client's concurrency; more would only hold sockets.
            if idle.iter().filter(|(i, _)| *i == index).count() < 4 {
                idle.push((index, sender));
            }
        }
    }

    fn forget_token(&self) {
        if let Ok(mut token) = self.token.lock() {
            *token = None;
        }
    }

    /// The auth token, authenticating first if there is none yet.
    async fn token(&self, path: &'static str) -> Result<Option<String>, EtcdError> {
        let Some(credentials) = &self.credentials else { return Ok(None) };
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(Some(token));
        }
        let body = serde_json::json!({ "name": credentials.username, "password": credentials.password });
        let bytes = self.exchange("/v3/auth/authenticate", Bytes::from(body.to_string()), None).await?;
        let answer: AuthResponse = serde_json::from_slice(&bytes)
            .map_err(|e| EtcdError::Decode { path: "/v3/auth/authenticate", message: e.to_string() })?;
        if answer.token.is_empty() {
            return Err(EtcdError::Decode {
                path,
                message: "authentication answered no token (is auth enabled on etcd?)".into(),
            });
        }
        if let Ok(mut token) = self.token.lock() {
            *token = Some(answer.token.clone());
        }
        Ok(Some(answer.token))
    }
}

/// The error of a non-200 unary answer.
fn server_error(path: &'static str, status: u16, body: &[u8]) -> EtcdError {
    match serde_json::from_slice::<UnaryError>(body) {
        Ok(e) => {
            let message = if e.message.is_empty() { e.error } else { e.message };
            EtcdError::Server { path, status, code: e.code, message }
        }
        Err(_) => EtcdError::Server {
            path,
            status,
            code: 0,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// UNAVAILABLE (no leader, stopping) moves on to the next endpoint.
fn classify(error: EtcdError) -> Attempt {
    if error.is_transient() {
        Attempt::Next(error.to_string())
    } else {
        Attempt::Stop(error)
    }
}
