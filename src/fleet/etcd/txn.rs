//! Writing several keys as one: every key is written only if each one's
//! `mod_revision` is still the expected one, in a single etcd transaction.
//! On a conflict, every key's current value comes back, read in the same
//! transaction, so the caller sees one consistent state.

use serde_json::json;

use super::wire::{b64, KeyValue, TxnResponse};
use super::{Client, EtcdError};

/// What a conditional write of several keys did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every key was as expected and now holds its new value.
    Written {
        /// The revision of the write (every key's new `mod_revision`).
        revision: i64,
    },
    /// At least one key had changed; nothing was written.
    Conflict {
        /// The keys as they are now, in the order asked (`None`: absent).
        current: Vec<Option<KeyValue>>,
        /// The store's revision at the comparison.
        revision: i64,
    },
}

impl Client {
    /// Write each `(key, value, expected)` only if every key's
    /// `mod_revision` is still its `expected` (0: absent), all or nothing.
    pub async fn put_all_if(&self, writes: &[(String, Vec<u8>, i64)]) -> Result<TxnOutcome, EtcdError> {
        const PATH: &str = "/v3/kv/txn";
        let compare: Vec<_> = writes
            .iter()
            .map(|(key, _, expected)| {
                json!({ "target": "MOD", "result": "EQUAL", "key": b64(key.as_bytes()), "mod_revision": expected.to_string() })
            })
            .collect();
        let success: Vec<_> = writes
            .iter()
            .map(|(key, value, _)| json!({ "request_put": { "key": b64(key.as_bytes()), "value": b64(value) } }))
            .collect();
        let failure: Vec<_> =
            writes.iter().map(|(key, _, _)| json!({ "request_range": { "key": b64(key.as_bytes()) } })).collect();
        let body = json!({ "compare": compare, "success": success, "failure": failure });
        let answer: TxnResponse = self.transport.call(PATH, &body).await?;
        if answer.succeeded {
            return Ok(TxnOutcome::Written { revision: answer.header.revision });
        }
        let mut current = Vec::with_capacity(writes.len());
        for response in answer.responses {
            let range = response.response_range.unwrap_or_default();
            current.push(range.kvs.into_iter().next().map(|kv| KeyValue::from_wire(PATH, kv)).transpose()?);
        }
        Ok(TxnOutcome::Conflict { current, revision: answer.header.revision })
    }
}
