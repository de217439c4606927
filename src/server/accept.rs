//! The accept loop of one traffic listener: each connection gets a task
//! of its own, counted until it closes, until the proxy starts closing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connection::Connection;
use super::limits::{connection_builders, ConnLimits};
use crate::lifecycle::{stopped, OpenConnections, OpenGuard};
use crate::proxy::Proxy;

/// Accept connections on `listener` until `shutdown` turns true; each
/// connection is counted in `open` until it closes. With `tls`, each
/// connection is a TLS handshake first, using the certificate in force at
/// accept time.
pub async fn serve(
    listener: TcpListener,
    named: std::net::SocketAddr,
    proxy: Arc<Proxy>,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
    open: Arc<OpenConnections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builders = Arc::new(connection_builders(&limits));
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let guard = open.open();
                    let conn = Connection {
                        proxy: proxy.clone(),
                        builders: builders.clone(),
                        limits,
                        shutdown: conn_shutdown.clone(),
                        listener: named,
                    };
                    tokio::spawn(connection_task(conn, stream, peer, tls.clone(), guard));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// One accepted connection's task, counted in `guard` until it closes.
///
/// The connection's own future is large (hyper's state for both
/// protocols, rustls's for TLS), and a move copies all of it: spawning
/// moves a task's future several times. Boxed, the task holds a pointer
/// and that future is written once, which clients that close after one
/// request (curl, health checkers) would otherwise pay on every request.
async fn connection_task(
    conn: Connection,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<crate::tls::ServerTls>>,
    guard: OpenGuard,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => Box::pin(conn.run_plain(stream, peer)).await,
        Some(tls) => Box::pin(conn.run_tls(stream, peer, tls)).await,
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::Connection;
    use crate::lifecycle::OpenGuard;
    use std::sync::Arc;

    /// The future `f` returns, measured without calling `f`.
    fn future_size<F, Fut>(_f: F) -> usize
    where
        F: FnOnce(
            Connection,
            tokio::net::TcpStream,
            std::net::SocketAddr,
            Option<Arc<crate::tls::ServerTls>>,
            OpenGuard,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// An idle connection's memory is mostly this future (boxed by
    /// `connection_task`). HTTP/2's state, several times HTTP/1.1's, sits
    /// behind a box of its own, so HTTP/1.1 connections do not carry it.
    #[test]
    fn a_cleartext_connection_future_leaves_http2_state_out() {
        fn size<F, Fut>(_f: F) -> usize
        where
            F: FnOnce(Connection, tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = size(Connection::run_plain);
        assert!(size <= 2560, "a cleartext connection's future is {size} bytes");
    }

    /// Spawning copies a task's future several times: the connection's
    /// state (KiB of it) must sit behind a box, not in the task itself.
    #[test]
    fn a_connection_task_holds_its_connection_boxed() {
        let size = future_size(super::connection_task);
        assert!(size <= 512, "a connection task's future is {size} bytes");
    }
}
