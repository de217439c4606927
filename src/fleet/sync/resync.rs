//! Applying the fleet's state: the watch's events as they come, and the
//! whole state read again after a start or a reconnect.
//!
//! On a resync a change made while cut off is written if nobody changed
//! its key meanwhile, else etcd's value wins — except that a trip is never
//! lost: it is made again on etcd's state (trips are a union).

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::Fleet;
use crate::control::{Decision, SharedKey, SharedValue};
use crate::fleet::etcd::{EtcdError, Event, EventKind, TxnOutcome};
use crate::fleet::state::{self, Decoded};
use crate::timestamp::rfc3339;

impl Fleet {
    pub(super) fn apply_events(&self, events: Vec<Event>) {
        let mut units = Vec::new();
        let mut cause = String::new();
        for event in events {
            if event.kind != EventKind::Put {
                continue;
            }
            let key = event.kv.key_str().to_string();
            match state::decode(&self.config.prefix, &key, &event.kv.value) {
                Ok(Decoded { key, value, by, cause: why, .. }) => {
                    cause = format!("fleet: {why} ({by})");
                    units.push((key, value, event.kv.mod_revision));
                }
                Err(e) => tracing::warn!(error = %e, "unreadable fleet state in etcd; ignored"),
            }
        }
        if !units.is_empty() {
            self.control.apply_shared(units, &cause, false);
        }
    }

    /// Read the whole shared state and apply it; write what was decided
    /// while cut off (see the module docs for who wins). Returns the
    /// revision read, to watch from.
    pub(super) async fn resync(&self) -> Result<i64, EtcdError> {
        let range = self.client.get_prefix(state::state_prefix(&self.config.prefix)).await?;
        let mut stored: BTreeMap<SharedKey, (SharedValue, i64, String)> = BTreeMap::new();
        for kv in &range.kvs {
            let key = kv.key_str().to_string();
            match state::decode(&self.config.prefix, &key, &kv.value) {
                Ok(d) => {
                    stored.insert(d.key, (d.value, kv.mod_revision, format!("fleet: {} ({})", d.cause, d.by)));
                }
                Err(e) => tracing::warn!(error = %e, "unreadable fleet state in etcd; ignored"),
            }
        }
        let pending = std::mem::take(&mut self.lock().pending);
        let mut to_write = Vec::new();
        let mut lost = Vec::new();
        for (key, p) in pending {
            let in_etcd = stored.get(&key).map_or(0, |(_, version, _)| *version);
            if in_etcd == p.based_on {
                stored.remove(&key);
                to_write.push((key, p));
            } else {
                tracing::warn!(?key, cause = %p.cause, "changed in etcd while this replica was cut off: etcd's state wins");
                lost.push((key, p));
            }
        }
        let units: Vec<_> = stored.into_iter().map(|(key, (value, version, _))| (key, value, version)).collect();
        if !units.is_empty() {
            self.control.apply_shared(units, "fleet: state read from etcd", false);
        }
        for (key, p) in to_write {
            let decision = Decision {
                revision: 0,
                cause: p.cause.clone(),
                maker: p.maker,
                changes: vec![crate::control::Change {
                    key: key.clone(),
                    value: p.value.clone(),
                    based_on: p.based_on,
                }],
            };
            let writes = vec![(
                state::key_of(&self.config.prefix, &key),
                state::encode(&p.value, &self.config.replica, &p.cause, p.maker, &rfc3339(SystemTime::now())),
                p.based_on,
            )];
            match self.client.put_all_if(&writes).await {
                Ok(TxnOutcome::Written { revision }) => {
                    tracing::info!(?key, cause = %p.cause, "a decision made while cut off is written to etcd");
                    self.remember_written(&[(key.clone(), p.based_on, revision)]);
                    self.control.shared_written(&[(key, p.based_on, revision)]);
                }
                Ok(TxnOutcome::Conflict { current, .. }) => {
                    self.lost(&decision, &current);
                }
                Err(e) => {
                    self.lock().pending.insert(key, p);
                    return Err(e);
                }
            }
        }
        // Trips are a union: one made while cut off is made again on etcd's state.
        self.retrip(lost.iter().map(|(k, p)| (k, &p.value)));
        Ok(range.revision)
    }
}
