//! The accept loop of one traffic listener: each connection gets a task
//! of its own, counted until it closes, until the proxy starts closing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::Connection;
use super::limits::{connection_builders, ConnLimits};
use crate::lifecycle::{stopped, OpenConnections};
use crate::proxy::Proxy;

/// Idle time before the first TCP keepalive probe on a client connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel closes the connection.
const KEEPALIVE_PROBES: u32 = 6;

/// TCP keepalive for every connection `listener` accepts (set on the
/// listener, whose accepted sockets inherit it, so no accept pays a
/// system call for it). A client that vanishes without a FIN or a reset
/// (a NAT that forgot it, a phone that changed networks) is then found
/// within about two minutes of silence, which is what ends an upgraded
/// tunnel to an idle backend: no timeout of the proxy's watches a tunnel,
/// whose quiet spells are the application's business.
fn keep_alive_accepted(listener: &TcpListener) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_keepalive(&keepalive) {
        tracing::warn!(error = %e, "cannot set TCP keepalive on a listener; vanished clients of tunnels go unnoticed");
    }
}

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
    keep_alive_accepted(&listener);
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
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        None => tokio::spawn(ConnTask::new(conn.open_plain(stream, peer, guard))),
                        Some(tls) => tokio::spawn(ConnTask::new(conn.open_tls(stream, peer, tls.clone(), guard))),
                    };
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

pin_project_lite::pin_project! {
    /// One accepted connection's task: its opening (the look at its first
    /// bytes, or the TLS handshake), then its loop.
    ///
    /// The opening is boxed and freed once the connection is open, and the
    /// loop then takes the task's room: an open connection keeps neither
    /// the opening's state nor a second allocation while it idles.
    #[project = ConnTaskProj]
    enum ConnTask<O, R> {
        Opening { opening: Pin<Box<O>> },
        Open { #[pin] open: R },
        Done,
    }
}

impl<O, R> ConnTask<O, R> {
    fn new(opening: O) -> Self {
        ConnTask::Opening { opening: Box::pin(opening) }
    }
}

impl<O: Future<Output = Option<R>>, R: Future<Output = ()>> Future for ConnTask<O, R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                ConnTaskProj::Opening { opening } => match std::task::ready!(opening.as_mut().poll(cx)) {
                    Some(open) => self.set(ConnTask::Open { open }),
                    None => self.set(ConnTask::Done),
                },
                ConnTaskProj::Open { open } => {
                    std::task::ready!(open.poll(cx));
                    self.set(ConnTask::Done);
                }
                ConnTaskProj::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future of `N` bytes that never finishes.
    struct Sized<const N: usize>([u8; N]);

    impl<const N: usize> std::future::Future for Sized<N> {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            std::task::Poll::Pending
        }
    }

    /// The opening sits behind a box and the loop in the task itself: the
    /// task is the loop's size, whatever the opening's.
    #[test]
    fn a_connection_task_is_its_loops_size() {
        type Task = ConnTask<std::future::Ready<Option<Sized<700>>>, Sized<700>>;
        let size = std::mem::size_of::<Task>();
        assert!(size <= 700 + 16, "a connection task is {size} bytes");
        type BigOpening = ConnTask<Sized<4000>, Sized<700>>;
        assert_eq!(std::mem::size_of::<BigOpening>(), size);
    }

    /// Accepted sockets inherit the listener's keepalive (Linux does; the
    /// accept loop relies on it).
    #[tokio::test]
    async fn accepted_connections_carry_tcp_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        keep_alive_accepted(&listener);
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), KEEPALIVE_PROBES);
    }
}
