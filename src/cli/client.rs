//! One HTTP exchange with the admin API, over hyper's client, with every
//! way it can go wrong sorted into the command line's exit codes.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::error::CliError;
use super::target::Target;

/// How long one call may take, connect to last byte.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    target: Target,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for `target`.
    pub fn new(target: Target) -> AdminClient {
        AdminClient { target, http: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// `GET path` as JSON; any status but 2xx is a refusal.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    /// `GET path` as JSON, `None` when the proxy has no such endpoint (404):
    /// for what a proxy may not offer yet, such as `/rollouts`.
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>, CliError> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(CliError::Refused { status: StatusCode::NOT_FOUND, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A write (`POST`, `PUT`, `DELETE`) with the token when there is one.
    pub async fn write(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| CliError::Usage(e.to_string()))?;
        self.call(method, path, Some(body.unwrap_or(Value::Object(Default::default())))).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let unreachable = |reason: String| CliError::Unreachable { base: self.target.base.clone(), reason };
        let mut req = Request::builder().method(method).uri(format!("{}{}", self.target.base, path));
        req = req.header(header::ACCEPT, "application/json");
        let bytes = match body {
            Some(body) => {
                req = req.header(header::CONTENT_TYPE, "application/json").header("x-cutover-admin", "1");
                if let Some(token) = &self.target.token {
                    req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
                }
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
        let exchange = async {
            let res = self.http.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            let status = res.status();
            let body = res.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok::<_, CliError>((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))??;
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return value.ok_or_else(|| CliError::Refused { status, message: "the answer is not JSON".into() });
        }
        let message = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(CliError::Refused { status, message })
    }
}

/// An error with its sources, `a: b: c`: hyper's outer error alone says
/// only "client error (Connect)".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A route or pool name as one path segment: anything but unreserved
/// characters percent-encoded, so a name cannot reach another endpoint.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_segment() {
        assert_eq!(segment("shop-v2.x"), "shop-v2.x");
        assert_eq!(segment("a/../reload"), "a%2F..%2Freload");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = AdminClient::new(Target { base: format!("http://{addr}"), token: None });
        let e = client.get("/status").await.unwrap_err();
        assert_eq!(e.exit_code(), crate::cli::EXIT_UNREACHABLE, "{e}");
    }
}
