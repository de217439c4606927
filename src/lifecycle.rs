//! The small shared pieces of a proxy's life: the shutdown phases, waiting
//! on a shutdown flag, and counting what is still open.
//!
//! The listeners, the tunnels, the admin API and the runtime all watch the
//! same shutdown flags and count their connections the same way. These
//! pieces live here, below all of them and importing none of them, so that
//! each can use them without depending on another (the tunnels would
//! otherwise reach up into the server, which reaches the proxy, which opens
//! the tunnels).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The shutdown phases, as flags every part can watch.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Raised on the first shutdown signal: `/ready` answers 503.
    pub stopping: watch::Receiver<bool>,
    /// Raised after `shutdown_delay`: listeners close, connections finish.
    pub closing: watch::Receiver<bool>,
}

/// Resolves once the shutdown flag is up (or its sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it in here.
    let _ = flag.wait_for(|stop| *stop).await.map(|_| ());
}

/// Live connections (or tunnels), so shutdown can wait for the last one.
#[derive(Debug, Default)]
pub struct OpenConnections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Count one more until the guard drops.
    pub fn open(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        OpenGuard { conns: self.clone() }
    }

    /// Wait until every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.count() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Keeps one connection (or tunnel) counted while it lives.
#[derive(Debug)]
pub struct OpenGuard {
    conns: Arc<OpenConnections>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.conns.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.conns.closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_closed_waits_for_the_last_guard() {
        let open = Arc::new(OpenConnections::default());
        let first = open.open();
        let second = open.open();
        assert_eq!(open.count(), 2);
        let waiter = tokio::spawn({
            let open = open.clone();
            async move { open.all_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(second);
        waiter.await.unwrap();
        assert_eq!(open.count(), 0);
    }
}
