//! Watching a prefix: every put and delete under it, in revision order,
//! across reconnects.
//!
//! The gateway's `/v3/watch` answers a stream of JSON objects, one per
//! watch response. A [`Watcher`] reads it in a background task and hands
//! the caller one [`WatchMessage::Events`] per response: the events of one
//! etcd transaction arrive together, so a caller can apply them in one step.
//!
//! When the stream breaks (etcd restarted, endpoint lost), the task says so
//! ([`WatchMessage::Disconnected`]), reconnects — to the next endpoint if
//! need be — and resumes from the revision after the last event it
//! delivered, so no change is missed or repeated. If etcd has compacted
//! that revision away, the watcher reports [`WatchMessage::Compacted`] and
//! ends: the caller re-reads the prefix and starts a new watch from the
//! read's revision + 1.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::{b64, prefix_end, KeyValue, StreamMessage, WatchResponse};
use super::Client;

/// First pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest streamed message accepted (etcd's own request limit is 1.5 MiB).
const MAX_MESSAGE: usize = 8 << 20;
const PATH: &str = "/v3/watch";

/// Whether an event wrote or deleted its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written (created or changed).
    Put,
    /// The key was deleted (by a delete, or its lease ending).
    Delete,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: key and `mod_revision` only).
    pub kv: KeyValue,
}

/// What a [`Watcher`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch is established (first time, or again after a break).
    Connected,
    /// Changes of one revision (one etcd transaction), in order.
    Events {
        /// The revision of these changes.
        revision: i64,
        /// The changes.
        events: Vec<Event>,
    },
    /// The stream broke; the watcher is reconnecting.
    Disconnected {
        /// Why.
        error: String,
    },
    /// The revision to resume from is compacted: re-read and watch anew.
    /// Nothing follows this message.
    Compacted {
        /// etcd's compaction revision.
        compact_revision: i64,
    },
}

/// A running watch; dropping it stops the background task.
#[derive(Debug)]
pub struct Watcher {
    messages: mpsc::Receiver<WatchMessage>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// The next message; `None` after [`WatchMessage::Compacted`].
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.messages.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Watch every key under `prefix`, from revision `from` (inclusive).
    pub fn watch_prefix(&self, prefix: impl AsRef<[u8]>, from: i64) -> Watcher {
        let prefix = prefix.as_ref();
        self.watch_range(prefix.to_vec(), Some(prefix_end(prefix)), from)
    }

    /// Watch one key, from revision `from` (inclusive).
    pub fn watch_key(&self, key: impl AsRef<[u8]>, from: i64) -> Watcher {
        self.watch_range(key.as_ref().to_vec(), None, from)
    }

    fn watch_range(&self, key: Vec<u8>, end: Option<Vec<u8>>, from: i64) -> Watcher {
        let (tx, messages) = mpsc::channel(64);
        let task = tokio::spawn(run(self.clone(), key, end, from, tx));
        Watcher { messages, task }
    }
}

/// How one stream ended.
enum End {
    /// The caller dropped the watcher, or the watch is compacted: stop.
    Stop,
    /// Reconnect, after this error.
    Broken(String),
}

async fn run(client: Client, key: Vec<u8>, end: Option<Vec<u8>>, from: i64, tx: mpsc::Sender<WatchMessage>) {
    let mut next = from.max(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut create = json!({ "key": b64(&key), "start_revision": next.to_string() });
        if let Some(end) = &end {
            create["range_end"] = json!(b64(end));
        }
        let body = json!({ "create_request": create });
        let error = match client.transport.stream(PATH, &body).await {
            Ok(stream) => match read(stream, &mut next, &mut backoff, &tx).await {
                End::Stop => return,
                End::Broken(error) => error,
            },
            Err(e) => e.to_string(),
        };
        tracing::debug!(%error, resume = next, "etcd watch broke; reconnecting");
        if tx.send(WatchMessage::Disconnected { error }).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Read one stream until it ends, advancing `next` past each delivered event.
async fn read(
    mut stream: hyper::body::Incoming,
    next: &mut i64,
    backoff: &mut Duration,
    tx: &mpsc::Sender<WatchMessage>,
) -> End {
    let mut buffer = Messages::default();
    loop {
        let frame = match stream.frame().await {
            None => return End::Broken("etcd closed the watch stream".into()),
            Some(Err(e)) => return End::Broken(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let messages = match buffer.push(&data) {
            Ok(messages) => messages,
            Err(error) => return End::Broken(error),
        };
        for message in messages {
            if let Some(error) = message.error {
                return End::Broken(format!("{} (gRPC code {})", error.message, error.grpc_code));
            }
            let Some(response) = message.result else { continue };
            if response.compact_revision > 0 {
                let _ = tx.send(WatchMessage::Compacted { compact_revision: response.compact_revision }).await;
                return End::Stop;
            }
            if response.canceled {
                return End::Broken(format!("etcd canceled the watch: {}", response.cancel_reason));
            }
            if response.created {
                *backoff = MIN_BACKOFF;
                if tx.send(WatchMessage::Connected).await.is_err() {
                    return End::Stop;
                }
            }
            if response.events.is_empty() {
                continue;
            }
            let mut events = Vec::with_capacity(response.events.len());
            for wire in response.events {
                let kind = if wire.kind == "DELETE" { EventKind::Delete } else { EventKind::Put };
                match KeyValue::from_wire(PATH, wire.kv) {
                    Ok(kv) => events.push(Event { kind, kv }),
                    Err(e) => return End::Broken(e.to_string()),
                }
            }
            // A catching-up response may hold several revisions: one message each.
            for events in split_by_revision(events) {
                let revision = events.first().map(|e| e.kv.mod_revision).unwrap_or(*next);
                *next = (*next).max(revision + 1);
                if tx.send(WatchMessage::Events { revision, events }).await.is_err() {
                    return End::Stop;
                }
            }
        }
    }
}

/// Consecutive events of one revision, in order.
fn split_by_revision(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut groups: Vec<Vec<Event>> = Vec::new();
    for event in events {
        match groups.last_mut() {
            Some(group) if group[0].kv.mod_revision == event.kv.mod_revision => group.push(event),
            _ => groups.push(vec![event]),
        }
    }
    groups
}

/// Whole JSON messages out of a byte stream cut anywhere.
///
/// The gateway writes one JSON object per message, newline-separated, and
/// HTTP chunks need not follow message boundaries: only whole objects are
/// consumed, the rest waits for more bytes.
#[derive(Default)]
struct Messages {
    buffer: BytesMut,
}

impl Messages {
    fn push(&mut self, data: &[u8]) -> Result<Vec<StreamMessage<WatchResponse>>, String> {
        self.buffer.extend_from_slice(data);
        let mut parsed = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<StreamMessage<WatchResponse>>();
        let mut messages = Vec::new();
        let consumed = loop {
            match parsed.next() {
                Some(Ok(message)) => messages.push(message),
                Some(Err(e)) if e.is_eof() => break parsed.byte_offset(),
                Some(Err(e)) => return Err(format!("bad watch message: {e}")),
                None => break parsed.byte_offset(),
            }
        };
        self.buffer.advance(consumed);
        if self.buffer.len() > MAX_MESSAGE {
            return Err("watch message too long".into());
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        r#"{"result":{"header":{"revision":"3"},"created":true}}"#,
        "\n",
        r#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"cC9h","mod_revision":"4","value":"MQ=="}}]}}"#,
        "\n",
        r#"{"result":{"events":[{"type":"DELETE","kv":{"key":"cC9h","mod_revision":"5"}}]}}"#,
        "\n",
    );

    #[test]
    fn messages_cut_at_any_byte_come_out_whole_and_in_order() {
        for cut in 1..STREAM.len() {
            let mut messages = Messages::default();
            let (a, b) = STREAM.as_bytes().split_at(cut);
            let mut all = messages.push(a).expect("first part");
            all.extend(messages.push(b).expect("second part"));
            assert_eq!(all.len(), 3, "cut at {cut}");
            let results: Vec<_> = all.into_iter().map(|m| m.result.expect("a result")).collect();
            assert!(results[0].created);
            assert_eq!(results[1].events[0].kind, "");
            assert_eq!(results[2].events[0].kind, "DELETE");
            assert!(messages.buffer.is_empty(), "nothing left over at {cut}");
        }
    }

    #[test]
    fn garbage_breaks_the_stream() {
        let mut messages = Messages::default();
        assert!(messages.push(b"{\"result\":{}}\nnot json").is_err());
        assert!(Messages::default().push(b"[1,2]").is_err());
    }

    #[test]
    fn a_catching_up_response_splits_by_revision() {
        let event = |revision: i64| Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: b"k".to_vec(),
                value: Vec::new(),
                create_revision: 1,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
        };
        let groups = split_by_revision(vec![event(4), event(4), event(6)]);
        let revisions: Vec<Vec<i64>> = groups.iter().map(|g| g.iter().map(|e| e.kv.mod_revision).collect()).collect();
        assert_eq!(revisions, [vec![4, 4], vec![6]]);
    }
}
