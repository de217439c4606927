//! One leader among the replicas, through a lease-backed key in etcd.
//!
//! A candidate takes a lease and creates `<prefix>/leader` holding its id,
//! attached to the lease, in a transaction that succeeds only while the key
//! is absent. Whoever created it leads for as long as its lease lives: the
//! leader keeps the lease alive ([`LeaseKeeper`]); the others watch the key
//! and campaign again when it is deleted — the leader resigned, or its
//! lease expired because the replica died or lost etcd. So a dead leader is
//! replaced within the TTL.
//!
//! A leader that cannot refresh its lease for a whole TTL stops calling
//! itself leader at once, because etcd may have expired the lease and let
//! another replica in: two replicas may briefly both be *followers*, never
//! both leaders (the keeper counts the TTL from the moment a refresh was
//! sent, so it gives up no later than etcd does).
//!
//! The outcome is published on [`tokio::sync::watch`] channels: whether
//! this replica leads, and which replica does as far as it knows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::etcd::{lease_ttl, CasOutcome, Client, EventKind, LeaseKeeper, WatchMessage};

/// First pause after a failed etcd call; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between campaign attempts while etcd is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A running candidacy; dropping it stops refreshing its lease, so another
/// replica takes over within the TTL.
#[derive(Debug)]
pub struct Election {
    is_leader: watch::Receiver<bool>,
    leader: watch::Receiver<Option<String>>,
    published: Arc<Published>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Published {
    is_leader: watch::Sender<bool>,
    leader: watch::Sender<Option<String>>,
    /// The lease of the current candidacy, to revoke on resignation.
    lease: Mutex<Option<i64>>,
}

impl Published {
    /// Publish a change. The two channels change in the order that keeps
    /// them consistent for a reader woken by `is_leader`: the name before
    /// leading starts, and leading ends before the name goes.
    fn set(&self, leading: bool, leader: Option<String>) {
        let set_leading = || self.is_leader.send_if_modified(|old| std::mem::replace(old, leading) != leading);
        let set_leader = || {
            self.leader.send_if_modified(|old| {
                let changed = *old != leader;
                *old = leader.clone();
                changed
            })
        };
        if leading {
            set_leader();
            set_leading();
        } else {
            set_leading();
            set_leader();
        }
    }
}

impl Election {
    /// Campaign for `key` as `replica`, with leases of `ttl`, until dropped
    /// or resigned.
    pub fn start(client: Client, key: String, replica: String, ttl: Duration) -> Election {
        let (is_leader_tx, is_leader) = watch::channel(false);
        let (leader_tx, leader) = watch::channel(None);
        let published = Arc::new(Published { is_leader: is_leader_tx, leader: leader_tx, lease: Mutex::new(None) });
        let campaign = Campaign { client, key, replica, ttl, published: published.clone() };
        let task = tokio::spawn(campaign.run());
        Election { is_leader, leader, published, task }
    }

    /// Whether this replica leads now; changes as leadership comes and goes.
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// The leading replica's id, as last seen (`None`: unknown or none).
    pub fn leader(&self) -> watch::Receiver<Option<String>> {
        self.leader.clone()
    }

    /// Stop campaigning and give up leadership now: the lease is revoked,
    /// which deletes the key and wakes the other candidates.
    pub async fn resign(self, client: &Client) -> Result<(), super::etcd::EtcdError> {
        self.task.abort();
        self.published.set(false, None);
        let lease = self.published.lease.lock().ok().and_then(|mut l| l.take());
        match lease {
            Some(lease) => client.lease_revoke(lease).await,
            None => Ok(()),
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        // Receivers outlive the election: they must not read "leading" from
        // a candidacy that no longer runs.
        self.published.set(false, None);
        self.task.abort();
    }
}

struct Campaign {
    client: Client,
    key: String,
    replica: String,
    ttl: Duration,
    published: Arc<Published>,
}

/// Why a candidacy under one lease ended.
enum Outcome {
    /// The lease is lost: take a new one.
    LeaseLost,
    /// The key changed hands or vanished: campaign again under the same lease.
    Again,
}

impl Campaign {
    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let lease = match self.client.lease_grant(self.ttl).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take an etcd lease for the leader election; retrying");
                    self.published.set(false, None);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let granted = lease_ttl(lease.ttl_secs);
            let keeper = LeaseKeeper::spawn(self.client.clone(), lease.id, granted);
            if let Ok(mut current) = self.published.lease.lock() {
                *current = Some(lease.id);
            }
            loop {
                let outcome = tokio::select! {
                    _ = keeper.lost() => Outcome::LeaseLost,
                    outcome = self.campaign_once(lease.id, &mut backoff) => outcome,
                };
                if let Outcome::LeaseLost = outcome {
                    break;
                }
            }
            if *self.published.is_leader.borrow() {
                tracing::warn!(replica = %self.replica, "lost the leader's lease; no longer leading");
            }
            self.published.set(false, None);
            drop(keeper);
            // The lease may still exist if only its refreshes failed; ending
            // it frees the key for the next leader sooner.
            let _ = self.client.lease_revoke(lease.id).await;
        }
    }

    /// One try at the key, then wait until it is worth trying again.
    async fn campaign_once(&self, lease: i64, backoff: &mut Duration) -> Outcome {
        let (holder, revision) = match self.client.put_if(&self.key, &self.replica, 0, Some(lease)).await {
            Ok(CasOutcome::Written { revision }) => (self.replica.clone(), revision),
            Ok(CasOutcome::Conflict { current: Some(kv), revision }) => {
                // Our own key under our lease: an earlier try succeeded but
                // its answer was lost.
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                if kv.lease == lease {
                    (holder, kv.mod_revision)
                } else {
                    (holder, revision.max(kv.mod_revision))
                }
            }
            Ok(CasOutcome::Conflict { current: None, .. }) => {
                // The key vanished between the compare and the read: try again.
                return Outcome::Again;
            }
            Err(e) => {
                tracing::debug!(error = %e, "leader campaign failed; retrying");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
                return Outcome::Again;
            }
        };
        *backoff = MIN_BACKOFF;
        let leading = holder == self.replica;
        if leading && !*self.published.is_leader.borrow() {
            tracing::info!(replica = %self.replica, "leading the fleet");
        }
        self.published.set(leading, Some(holder.clone()));
        // Wait for the key to change: deleted (lease ended, resigned) or
        // overwritten. Events after the revision read are enough.
        let mut watcher = self.client.watch_key(&self.key, revision + 1);
        let changed = loop {
            match watcher.next().await {
                Some(WatchMessage::Events { events, .. }) => {
                    let gone = events.iter().any(|event| match event.kind {
                        EventKind::Delete => true,
                        EventKind::Put => event.kv.value != holder.as_bytes(),
                    });
                    if gone {
                        break true;
                    }
                }
                Some(WatchMessage::Connected | WatchMessage::Disconnected { .. }) => {}
                Some(WatchMessage::Compacted { .. }) | None => break false,
            }
        };
        if changed {
            // Whoever held the key no longer does; the next try says who leads.
            self.published.set(false, None);
        }
        Outcome::Again
    }
}
