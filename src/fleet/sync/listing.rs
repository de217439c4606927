//! Keeping this replica listed under `<prefix>/replicas/`, under its own
//! lease, with the digest of the config file it runs; and reading the list
//! of live replicas for `/status`.

use crate::fleet::etcd::LeaseKeeper;
use crate::fleet::state::{self, ReplicaRecord};

use super::Fleet;

impl Fleet {
    /// Keep `<prefix>/replicas/<name>` under a live lease, with the config
    /// digest in force, and refresh the list of live replicas.
    pub(super) async fn keep_listed(&self, lease: &mut Option<LeaseKeeper>, published: &mut Option<ReplicaRecord>) {
        if !lease.as_ref().is_some_and(LeaseKeeper::is_alive) {
            *published = None;
            match self.client.lease_grant(self.config.lease_ttl).await {
                Ok(granted) => {
                    *lease = Some(LeaseKeeper::spawn(self.client.clone(), granted.id, self.config.lease_ttl));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take the replica's lease");
                    return;
                }
            }
        }
        let record = ReplicaRecord {
            replica: self.config.replica.clone(),
            config: format!("{:016x}", self.control.config_digest()),
            started: self.started.clone(),
        };
        if published.as_ref() != Some(&record) {
            let id = lease.as_ref().map(LeaseKeeper::id);
            let value = serde_json::to_vec(&record).unwrap_or_default();
            match self.client.put(self.replica_key(), value, id).await {
                Ok(_) => *published = Some(record),
                Err(e) => tracing::debug!(error = %e, "cannot list this replica"),
            }
        }
        if let Ok(range) = self.client.get_prefix(state::replicas_prefix(&self.config.prefix)).await {
            let replicas = range.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
            self.lock().replicas = replicas;
        }
    }
}
