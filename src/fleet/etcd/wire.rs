//! The JSON the gateway speaks, and its translation to plain Rust values.
//!
//! etcd's gateway is grpc-gateway over the protobuf API, so its JSON follows
//! the proto3 mapping: int64 fields (revisions, lease ids, TTLs, counts)
//! travel as JSON *strings*; bytes fields (keys, values) as base64; and a
//! field at its default value is left out — a missing `kvs` is an empty
//! range, a missing `succeeded` a failed transaction, a missing event
//! `type` a PUT, a missing `TTL` in a keepalive answer a lease that is gone.
//! Everything here tolerates both string and number for int64 and treats
//! absence as the default.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use super::EtcdError;

/// Encode bytes for a request field.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decode a bytes field of an answer.
pub(crate) fn unb64(path: &'static str, text: &str) -> Result<Vec<u8>, EtcdError> {
    STANDARD.decode(text).map_err(|e| EtcdError::Decode { path, message: format!("bad base64: {e}") })
}

/// An int64 as the gateway writes it (a string), or as a number.
pub(crate) fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// The end of the range that covers every key starting with `prefix`:
/// the prefix with its last byte below 0xff incremented (etcd's own rule).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff (or the prefix is empty): the whole keyspace.
    vec![0]
}

/// The header on every answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub(crate) revision: i64,
}

/// A key-value as the gateway writes it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireKv {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) version: i64,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) lease: i64,
}

/// A key and its value with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// The revision that created the key (0: the key does not exist).
    pub create_revision: i64,
    /// The revision of the key's last change: what a conditional write compares.
    pub mod_revision: i64,
    /// How many times the key changed since it was created.
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl KeyValue {
    /// The key as text (lossy: keys cutover writes are UTF-8).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    pub(crate) fn from_wire(path: &'static str, kv: WireKv) -> Result<KeyValue, EtcdError> {
        Ok(KeyValue {
            key: unb64(path, &kv.key)?,
            value: unb64(path, &kv.value)?,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        })
    }
}

/// `/v3/kv/range`'s answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) kvs: Vec<WireKv>,
}

/// The answers that carry only a header (put, delete).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HeaderOnly {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) deleted: i64,
}

/// `/v3/kv/txn`'s answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) succeeded: bool,
    #[serde(default)]
    pub(crate) responses: Vec<TxnOpResponse>,
}

/// One operation's answer inside a transaction.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TxnOpResponse {
    #[serde(default)]
    pub(crate) response_range: Option<RangeResponse>,
}

/// `/v3/lease/grant`'s answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub(crate) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(crate) ttl: i64,
    #[serde(default)]
    pub(crate) error: String,
}

/// One message of `/v3/lease/keepalive`'s stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeepAliveResponse {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(crate) ttl: i64,
}

/// `/v3/auth/authenticate`'s answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthResponse {
    #[serde(default)]
    pub(crate) token: String,
}

/// A streamed message: `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamMessage<T> {
    pub(crate) result: Option<T>,
    pub(crate) error: Option<StreamError>,
}

/// The error object of a stream (grpc-gateway's `runtime.StreamError`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamError {
    #[serde(default)]
    pub(crate) grpc_code: i64,
    #[serde(default)]
    pub(crate) http_code: u16,
    #[serde(default)]
    pub(crate) message: String,
}

/// The error body of a unary call.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UnaryError {
    #[serde(default)]
    pub(crate) code: i64,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) error: String,
}

/// One message of `/v3/watch`'s stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResponse {
    #[serde(default)]
    pub(crate) created: bool,
    #[serde(default)]
    pub(crate) canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) compact_revision: i64,
    #[serde(default)]
    pub(crate) cancel_reason: String,
    #[serde(default)]
    pub(crate) events: Vec<WireEvent>,
}

/// One event as the gateway writes it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireEvent {
    /// `"DELETE"`, or absent for a PUT (proto3 leaves the default out).
    #[serde(default, rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) kv: WireKv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_read_strings_numbers_and_absence() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"42"},"kvs":[{"key":"Zm9v","mod_revision":7,"value":"YmFy"}]}"#,
        )
        .expect("parses");
        assert_eq!(r.header.revision, 42);
        let kv = KeyValue::from_wire("/v3/kv/range", r.kvs.into_iter().next().expect("one kv")).expect("decodes");
        assert_eq!((kv.key.as_slice(), kv.value.as_slice()), (&b"foo"[..], &b"bar"[..]));
        assert_eq!((kv.mod_revision, kv.create_revision, kv.lease), (7, 0, 0));
        let empty: RangeResponse = serde_json::from_str(r#"{"header":{}}"#).expect("parses");
        assert!(empty.kvs.is_empty());
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
    }

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
