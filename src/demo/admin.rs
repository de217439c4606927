//! The admin API client, over real HTTP as an operator's `curl` would use
//! it, and what the demo reads from its `/status` and `/history` answers.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::params::{CALL_TIMEOUT, POOLS, ROUTE};

/// The admin API over real HTTP, as an operator's curl would use it.
#[derive(Clone)]
pub(super) struct Admin {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Admin {
    pub(super) fn new(addr: SocketAddr) -> Admin {
        Admin { base: format!("http://{addr}"), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// GET `path` and parse the JSON; errors say which call failed.
    pub(super) async fn get(&self, path: &str) -> Result<Value, String> {
        let (code, body) = self.send(Method::GET, path, None).await?;
        if code != StatusCode::OK {
            return Err(format!("GET {path} answered {code}: {body}"));
        }
        Ok(body)
    }

    /// Call `method path` with an optional JSON body; the answer's status
    /// and JSON body.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<(StatusCode, Value), String> {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let code = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            let value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON ({e})"))?;
            Ok::<_, String>((code, value))
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(format!("admin API {method} {path}: {e}")),
            Err(_) => Err(format!("admin API {method} {path}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

/// A trip as `/status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TripSeen {
    pub(super) reason: String,
    pub(super) detail: String,
    pub(super) revision: u64,
    pub(super) effective: String,
}

pub(super) fn trip_of(status: &Value, pool: &str) -> Option<TripSeen> {
    let tripped = pool_status(status, pool)?.get("tripped").filter(|t| !t.is_null())?;
    Some(TripSeen {
        reason: tripped["reason"].as_str().unwrap_or("?").to_string(),
        detail: tripped["detail"].as_str().unwrap_or("").to_string(),
        revision: tripped["revision"].as_u64().unwrap_or(0),
        effective: effective_split(status),
    })
}

pub(super) fn pool_status<'a>(status: &'a Value, pool: &str) -> Option<&'a Value> {
    status["pools"].as_array()?.iter().find(|p| p["name"].as_str() == Some(pool))
}

pub(super) fn revision(status: &Value) -> Option<u64> {
    status["revision"].as_u64()
}

pub(super) fn route_status(status: &Value) -> Option<&Value> {
    status["routes"].as_array()?.iter().find(|r| r["name"].as_str() == Some(ROUTE))
}

pub(super) fn effective_weight(status: &Value, pool: &str) -> Option<u64> {
    route_status(status)?["effective"][pool].as_u64()
}

/// `blue 100, green 0, canary 0`.
pub(super) fn effective_split(status: &Value) -> String {
    POOLS
        .iter()
        .map(|pool| format!("{pool} {}", effective_weight(status, pool).map_or("?".to_string(), |w| w.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `blue 0%, green 100%, canary 0%`: the route's effective split as shares.
pub(super) fn effective_shares(status: &Value) -> String {
    let weights: Vec<u64> = POOLS.iter().map(|pool| effective_weight(status, pool).unwrap_or(0)).collect();
    let total = weights.iter().sum::<u64>().max(1);
    POOLS
        .iter()
        .zip(weights)
        .map(|(pool, w)| format!("{pool} {}%", (w * 100 + total / 2) / total))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The demo route's rollout in a `/rollouts` answer.
pub(super) fn rollout_of(rollouts: &Value) -> Option<Value> {
    rollouts.as_array()?.iter().find(|r| r["route"].as_str() == Some(ROUTE)).cloned()
}

/// One line per revision of `/history`, at most `limit`.
pub(super) fn history_lines(history: &Value, limit: usize) -> String {
    let mut out = String::new();
    for rev in history.as_array().map(Vec::as_slice).unwrap_or_default().iter().take(limit) {
        let splits = &rev["splits"][ROUTE];
        let split: Vec<String> = POOLS.iter().map(|p| format!("{p} {}", splits[p].as_u64().unwrap_or(0))).collect();
        let _ = writeln!(
            out,
            "     revision {:>3}  {}  {:<28}  {}",
            rev["revision"].as_u64().unwrap_or(0),
            rev["time"].as_str().unwrap_or(""),
            split.join(", "),
            rev["cause"].as_str().unwrap_or("")
        );
    }
    out.trim_end().to_string()
}

pub(super) fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
