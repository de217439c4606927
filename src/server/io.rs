//! The downstream byte stream, as hyper reads and writes it, watched.
//!
//! Every read and write passes through [`Watched`], which is where the
//! watchdog learns that a request head has started, that a write found the
//! client's socket full, and where a head is scanned for a body framed two
//! ways, without a syscall or a timer of its own.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head_scan::HeadScan;
use super::watchdog::Activity;

/// The downstream byte stream, telling the connection's [`Activity`] when
/// bytes arrive between requests (the start of a request head), and whether
/// a request head framed its body two ways.
#[derive(Debug)]
pub(super) struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    scan: HeadScan,
}

impl<I> Watched<I> {
    /// `io`, reporting to `activity`.
    pub(super) fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { io, activity, scan: HeadScan::default() }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                let idle = this.activity.active.load(Ordering::Relaxed) == 0;
                if idle && !this.activity.h2.load(Ordering::Relaxed) {
                    if this.scan.feed(fresh) {
                        this.activity.framing_conflict.store(true, Ordering::Relaxed);
                    }
                } else {
                    this.scan.leave_head();
                }
                this.activity.saw_bytes();
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TLS accepts a write into its buffer and blocks in the flush.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
