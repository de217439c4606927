//! Upgraded connections (WebSocket and other `Upgrade` protocols), carried
//! as raw byte tunnels.
//!
//! An upgrade is tunnelled only after the backend agrees with `101
//! Switching Protocols`; until then the exchange is ordinary HTTP, so bytes
//! a client sends after an upgrade request that the backend refuses are
//! never forwarded. A tunnel keeps its exchange — and so its backend's
//! in-flight count — until it closes, so draining a backend waits for its
//! WebSockets, and a drain that times out closes them. Tunnels are also
//! counted for shutdown, and [`Tunnels::close_all`] ends the ones still open
//! when `drain_timeout` runs out.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::exchange::Exchange;
use crate::lifecycle::{stopped, OpenConnections};

/// The open tunnels of one proxy, and the switch that closes them.
#[derive(Debug)]
pub struct Tunnels {
    open: Arc<OpenConnections>,
    close: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Tunnels {
        Tunnels { open: Arc::default(), close: watch::Sender::new(false) }
    }
}

impl Tunnels {
    /// Tunnels open now.
    pub fn count(&self) -> usize {
        self.open.count()
    }

    /// Wait until every tunnel has closed.
    pub async fn all_closed(&self) {
        self.open.all_closed().await
    }

    /// Close every open tunnel now.
    pub fn close_all(&self) {
        self.close.send_replace(true);
    }
}

/// The protocol a client asks to upgrade to, if this is an HTTP/1.1 upgrade
/// request (`Connection: upgrade` plus `Upgrade: <protocol>`).
pub fn requested_upgrade(parts: &Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Put the upgrade request back on the headers after hop-by-hop stripping.
pub fn ask_upgrade(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// The backend agreed (101): answer the client with the same, and splice
/// the two upgraded connections together in a task of their own.
pub fn open(
    mut upstream_response: Response<Incoming>,
    downstream: OnUpgrade,
    exchange: Exchange,
    tunnels: &Tunnels,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut upstream_response);
    let (parts, _) = upstream_response.into_parts();
    // 101 keeps `Connection` and `Upgrade`: they are the agreement itself.
    let response = Response::from_parts(parts, ProxyBody::empty());
    let guard = tunnels.open.open();
    let mut close = tunnels.close.subscribe();
    let mut cut = exchange.backend().cut_signal();
    tokio::spawn(async move {
        let _counted = guard;
        // Dropped last, when the tunnel has closed: that ends its record.
        let mut exchange = exchange;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        // A tunnel cut short (an error, shutdown, a drain) is logged as one,
        // without the byte counts `copy_bidirectional` keeps to itself.
        if let Some(log) = exchange.log_mut() {
            log.tunnel_closed(0, 0);
        }
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut down, &mut up) => match result {
                Ok((up_bytes, down_bytes)) => {
                    if let Some(log) = exchange.log_mut() {
                        log.tunnel_closed(up_bytes, down_bytes);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
            },
            _ = stopped(&mut close) => tracing::debug!("tunnel closed at shutdown"),
            _ = stopped(&mut cut) => tracing::debug!("tunnel closed: its backend's drain timed out"),
        }
    });
    response
}
