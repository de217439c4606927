//! The read sizes of hyper's HTTP/1 connections, as the vendored patch
//! leaves them (`vendor/hyper/PATCH.md`).
//!
//! The patch lets an emptied read buffer that is still shared with a
//! message in flight be read into as it is, in the room it has left, so
//! that a read which finds nothing does not allocate a fresh buffer for
//! every request. A buffer that nothing else holds any more must instead
//! take its whole block back before the read: otherwise each read of a
//! large body would get only what the last one left, and a transfer would
//! take ever more, ever smaller reads. cutover forwards request bodies
//! through hyper's client, so this test runs hyper's client connection
//! over a scripted byte stream that serves a large response in pieces and
//! records how much room every read offers. The body's chunks are dropped
//! as they arrive, as the proxy's are once written on.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::time::timeout;

/// Bytes the scripted stream hands over per read at most, as a socket
/// would hand over what arrived in one segment train.
const PIECE: usize = 5000;
/// The response body: many pieces, so that many reads find the buffer
/// emptied by the last one.
const BODY: usize = 200_000;

const DEADLINE: Duration = Duration::from_secs(10);

/// A byte stream that answers once the request head is written: the
/// response at most [`PIECE`] bytes per read; and notes the room each
/// read offered.
struct Scripted {
    response: Vec<u8>,
    at: usize,
    written: Vec<u8>,
    waiting: Option<Waker>,
    offered: Arc<Mutex<Vec<usize>>>,
}

impl hyper::rt::Read for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.written.windows(4).any(|w| w == b"\r\n\r\n") {
            self.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let room = buf.remaining();
        self.offered.lock().unwrap_or_else(|e| e.into_inner()).push(room);
        let n = PIECE.min(room).min(self.response.len() - self.at);
        buf.put_slice(&self.response[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Scripted {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(bytes);
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_large_body_is_read_in_whole_reads_once_its_chunks_are_gone() {
    let mut response = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n").into_bytes();
    let head_len = response.len();
    response.extend((0..BODY).map(|i| (i % 251) as u8));
    let offered = Arc::new(Mutex::new(Vec::new()));
    let stream = Scripted { response, at: 0, written: Vec::new(), waiting: None, offered: Arc::clone(&offered) };

    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(stream)
        .await
        .expect("a handshake over the scripted stream");
    let driving = tokio::spawn(conn);
    let request = Request::get("http://backend/large").body(Empty::new()).expect("a request");
    let answer = timeout(DEADLINE, sender.send_request(request)).await.expect("a head in time").expect("a head");
    // The head's fields are slices of the read buffer: dropped with the
    // rest of the head, so that only the body's chunks hold it.
    let mut body = answer.into_body();
    let mut received = 0;
    while let Some(frame) = timeout(DEADLINE, body.frame()).await.expect("a chunk in time") {
        let frame = frame.expect("a chunk");
        received += frame.data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, BODY, "the whole body arrives");
    drop(sender);
    timeout(DEADLINE, driving).await.expect("the connection ends in time").expect("joins").expect("ends cleanly");

    let offered = offered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The mechanism ran: the body took many reads, each after the buffer
    // was emptied (the head came with the first).
    assert!(offered.len() >= (head_len + BODY) / PIECE, "reads: {offered:?}");
    let short: Vec<_> = offered.iter().filter(|&&room| room < PIECE).collect();
    assert!(
        short.is_empty(),
        "every read offers a whole piece's room once the buffer's chunks are dropped; short reads: {short:?} of {offered:?}"
    );
}
