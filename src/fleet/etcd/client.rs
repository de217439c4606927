//! The etcd operations the fleet needs, as plain async functions: read a
//! key or a prefix, write, delete, write only if nobody else wrote since
//! (compare the key's `mod_revision`), and leases.
//!
//! A [`Client`] is cheap to clone (one shared `Transport`); every call is
//! bounded by [`ClientOptions::timeout`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::transport::{Credentials, Transport};
use super::wire::{
    b64, prefix_end, HeaderOnly, KeepAliveResponse, KeyValue, LeaseGrantResponse, RangeResponse, StreamMessage,
    TxnResponse,
};
use super::{Endpoint, EtcdError};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The endpoints, tried in order when one cannot be reached.
    pub endpoints: Vec<Endpoint>,
    /// Bound on every call, failover included.
    pub timeout: Duration,
    /// etcd user and password, when etcd has auth enabled.
    pub credentials: Option<Credentials>,
    /// The TLS client config for `https://` endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    /// Plain endpoints, the default timeout, no auth, no TLS.
    pub fn new(endpoints: Vec<Endpoint>) -> ClientOptions {
        ClientOptions { endpoints, timeout: DEFAULT_TIMEOUT, credentials: None, tls: None }
    }
}

pub use crate::config::fleet::DEFAULT_TIMEOUT;

/// Keys and values read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// The store's revision when they were read: a watch from `revision + 1`
    /// sees every later change.
    pub revision: i64,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The key was as expected and now holds the new value.
    Written {
        /// The revision of the write (the key's new `mod_revision`).
        revision: i64,
    },
    /// Someone else changed the key first; nothing was written.
    Conflict {
        /// The key as it is now (`None`: absent).
        current: Option<KeyValue>,
        /// The store's revision at the comparison.
        revision: i64,
    },
}

/// A lease granted by etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id, to attach keys to it.
    pub id: i64,
    /// The TTL etcd granted, in seconds, at most [`MAX_LEASE_TTL_SECS`].
    pub ttl_secs: i64,
}

/// The longest TTL etcd grants (its `MaxLeaseTTL`). A longer one in an
/// answer is taken as this, so that a lease's deadline, an `Instant` plus
/// the TTL, is always one a clock can hold.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// A TTL from etcd's answer as a duration: at least a second, at most
/// [`MAX_LEASE_TTL_SECS`].
pub fn lease_ttl(secs: i64) -> Duration {
    Duration::from_secs(secs.clamp(1, MAX_LEASE_TTL_SECS).unsigned_abs())
}

/// An async etcd v3 client over the JSON gateway.
#[derive(Clone)]
pub struct Client {
    pub(crate) transport: Arc<Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `options`; it connects on first use.
    pub fn new(options: ClientOptions) -> Result<Client, EtcdError> {
        let transport = Transport::new(options.endpoints, options.tls, options.timeout, options.credentials)?;
        Ok(Client { transport: Arc::new(transport) })
    }

    /// Read one key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Range, EtcdError> {
        self.range(json!({ "key": b64(key.as_ref()) })).await
    }

    /// Read every key starting with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Range, EtcdError> {
        let prefix = prefix.as_ref();
        self.range(json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) })).await
    }

    async fn range(&self, body: serde_json::Value) -> Result<Range, EtcdError> {
        const PATH: &str = "/v3/kv/range";
        let answer: RangeResponse = self.transport.call(PATH, &body).await?;
        let kvs = answer.kvs.into_iter().map(|kv| KeyValue::from_wire(PATH, kv)).collect::<Result<_, _>>()?;
        Ok(Range { kvs, revision: answer.header.revision })
    }

    /// Write `value` at `key`, attached to `lease` if given; the revision of
    /// the write.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: Option<i64>,
    ) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": b64(key.as_ref()), "value": b64(value.as_ref()) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        let answer: HeaderOnly = self.transport.call("/v3/kv/put", &body).await?;
        Ok(answer.header.revision)
    }

    /// Delete `key`; whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, EtcdError> {
        let body = json!({ "key": b64(key.as_ref()) });
        let answer: HeaderOnly = self.transport.call("/v3/kv/deleterange", &body).await?;
        Ok(answer.deleted > 0)
    }

    /// Write `value` at `key` only if the key's `mod_revision` is still
    /// `expected` (0: only if the key is absent). On a conflict, the key's
    /// current value and revision come back, read in the same transaction.
    ///
    /// A connection lost after the request was sent may hide a write that
    /// happened; the call is then sent again (on a fresh connection or the
    /// next endpoint) and answers a conflict whose `current` is this very write (same value,
    /// same lease). Callers that must tell the two apart write a value that
    /// names the writer.
    pub async fn put_if(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        expected: i64,
        lease: Option<i64>,
    ) -> Result<CasOutcome, EtcdError> {
        const PATH: &str = "/v3/kv/txn";
        let key = b64(key.as_ref());
        let mut put = json!({ "key": key, "value": b64(value.as_ref()) });
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let body = json!({
            "compare": [{ "target": "MOD", "result": "EQUAL", "key": key, "mod_revision": expected.to_string() }],
            "success": [{ "request_put": put }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let answer: TxnResponse = self.transport.call(PATH, &body).await?;
        if answer.succeeded {
            return Ok(CasOutcome::Written { revision: answer.header.revision });
        }
        let range = answer.responses.into_iter().find_map(|r| r.response_range).unwrap_or_default();
        let current = range.kvs.into_iter().next().map(|kv| KeyValue::from_wire(PATH, kv)).transpose()?;
        Ok(CasOutcome::Conflict { current, revision: answer.header.revision })
    }

    /// Compact the history up to `revision`: older revisions can no longer
    /// be read or watched from (etcd's own auto-compaction does the same).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = json!({ "revision": revision.to_string(), "physical": true });
        self.transport.call::<HeaderOnly>("/v3/kv/compaction", &body).await.map(|_| ())
    }

    /// Ask for a lease of `ttl` (whole seconds, at least 1).
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        const PATH: &str = "/v3/lease/grant";
        let secs = ttl.as_secs().max(1);
        let answer: LeaseGrantResponse = self.transport.call(PATH, &json!({ "TTL": secs.to_string() })).await?;
        if !answer.error.is_empty() || answer.id == 0 {
            return Err(EtcdError::Decode { path: PATH, message: format!("no lease granted: {:?}", answer.error) });
        }
        Ok(Lease { id: answer.id, ttl_secs: answer.ttl.min(MAX_LEASE_TTL_SECS) })
    }

    /// Refresh `lease` once; the TTL it has again, or `None` if the lease
    /// is gone (expired or revoked). [`super::LeaseKeeper`] calls this on a
    /// schedule.
    pub async fn lease_keepalive_once(&self, lease: i64) -> Result<Option<Duration>, EtcdError> {
        const PATH: &str = "/v3/lease/keepalive";
        // The gateway runs the bidirectional stream for one request body:
        // one message in, one out. A lease that is gone answers with no TTL
        // rather than an error.
        let answer: StreamMessage<KeepAliveResponse> =
            self.transport.call(PATH, &json!({ "ID": lease.to_string() })).await?;
        if let Some(error) = answer.error {
            return Err(EtcdError::Server {
                path: PATH,
                status: error.http_code,
                code: error.grpc_code,
                message: error.message,
            });
        }
        let ttl = answer.result.map(|r| r.ttl).unwrap_or(0);
        Ok((ttl > 0).then(|| lease_ttl(ttl)))
    }

    /// Revoke `lease`: its keys are deleted at once. A lease already gone
    /// is not an error.
    pub async fn lease_revoke(&self, lease: i64) -> Result<(), EtcdError> {
        match self.transport.call::<HeaderOnly>("/v3/lease/revoke", &json!({ "ID": lease.to_string() })).await {
            Ok(_) => Ok(()),
            Err(EtcdError::Server { code: GRPC_NOT_FOUND, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// gRPC NOT_FOUND: what revoking an unknown lease answers.
const GRPC_NOT_FOUND: i64 = 5;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::lease_ttl;

    /// An answer's TTL becomes a deadline (`Instant` plus the TTL) in the
    /// lease keeper: past etcd's own maximum it is taken as that maximum,
    /// which a clock can add, where `i64::MAX` seconds would overflow it.
    #[test]
    fn a_lease_ttl_is_bounded_to_what_etcd_grants() {
        let longest = lease_ttl(i64::MAX);
        assert_eq!(longest, Duration::from_secs(9_000_000_000));
        let now = tokio::time::Instant::now();
        assert!(now.checked_add(Duration::from_secs(i64::MAX.unsigned_abs())).is_none(), "what the bound prevents");
        assert!(now + longest > now);
        assert_eq!(lease_ttl(30), Duration::from_secs(30));
        assert_eq!(lease_ttl(0), Duration::from_secs(1));
        assert_eq!(lease_ttl(-7), Duration::from_secs(1));
    }
}
