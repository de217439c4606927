//! Keeping a lease alive, and saying when it may no longer be.
//!
//! A [`LeaseKeeper`] refreshes its lease every third of the TTL (as etcd's
//! own clients do), so two refreshes can fail before the lease is in danger.
//! It reports the lease *lost* when etcd says it is gone, or when the last
//! successful refresh is a full TTL old: from then on etcd may have expired
//! it, and whoever holds something under the lease (a leadership) must act
//! as if it had. The TTL is counted from when a refresh was *sent*, so the
//! keeper gives up no later than etcd does.
//!
//! Dropping the keeper stops the refreshes; the lease then expires on its
//! own within its TTL. [`LeaseKeeper::revoke`] ends it at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Client;

/// Shortest pause between two refresh attempts after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A background task that keeps one lease alive.
#[derive(Debug)]
pub struct LeaseKeeper {
    client: Client,
    id: i64,
    alive: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Keep lease `id`, granted with `ttl`, alive from now on.
    pub fn spawn(client: Client, id: i64, ttl: Duration) -> LeaseKeeper {
        let (tx, alive) = watch::channel(true);
        let task = tokio::spawn(keep(client.clone(), id, ttl, tx));
        LeaseKeeper { client, id, alive, task }
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Whether the lease is still held (false once and for all).
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Wait until the lease is lost.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        // An error means the task ended, which it does only after losing.
        let _ = alive.wait_for(|alive| !alive).await;
    }

    /// Stop refreshing and revoke the lease, deleting its keys now.
    pub async fn revoke(self) -> Result<(), super::EtcdError> {
        self.task.abort();
        self.client.lease_revoke(self.id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(client: Client, id: i64, ttl: Duration, alive: watch::Sender<bool>) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut valid_until = Instant::now() + ttl;
    loop {
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(valid_until, client.lease_keepalive_once(id)).await;
        let pause = match answer {
            Ok(Ok(Some(granted))) => {
                valid_until = sent + granted;
                period
            }
            Ok(Ok(None)) => {
                tracing::warn!(lease = id, "etcd lease expired or was revoked");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = id, error = %e, "cannot refresh the etcd lease; retrying");
                RETRY_PAUSE.max(period / 4)
            }
            Err(_) => {
                tracing::warn!(lease = id, "etcd lease not refreshed within its TTL; it may have expired");
                break;
            }
        };
        let next = Instant::now() + pause;
        if next >= valid_until {
            // Try once more just before the end rather than sleep past it.
            tokio::time::sleep_until(valid_until.checked_sub(RETRY_PAUSE).unwrap_or(valid_until).max(sent)).await;
        } else {
            tokio::time::sleep_until(next).await;
        }
        if Instant::now() >= valid_until {
            tracing::warn!(lease = id, "etcd lease not refreshed within its TTL; it may have expired");
            break;
        }
    }
    alive.send_replace(false);
}
