//! The downstream byte stream, as hyper reads and writes it, watched.
//!
//! Every read and write passes through [`Watched`], which is where the
//! watchdog learns that a request head has started, that a write found the
//! client's socket full, and where a head is scanned for a body framed two
//! ways, without a syscall or a timer of its own. On an HTTP/2 connection
//! it also checks the client's preface, and on a cleartext HTTP/1 one the
//! first request line (which stands where the preface would), and answers
//! an invalid one with a GOAWAY before hyper sees it.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head_scan::HeadScan;
use super::preface::{Preface, PrefaceCheck, GOAWAY_PROTOCOL_ERROR};
use super::request_line::RequestLineCheck;
use super::watchdog::Activity;

/// The downstream byte stream, telling the connection's [`Activity`] when
/// bytes arrive between requests (the start of a request head), and whether
/// a request head framed its body two ways.
#[derive(Debug)]
pub(super) struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    scan: HeadScan,
    preface: PrefaceState,
}

/// Where the check of a connection's opening stands.
#[derive(Debug)]
enum PrefaceState {
    /// HTTP/1 over TLS (ALPN said so), or the opening was valid: nothing to
    /// check.
    Done,
    /// Checking the first bytes as they arrive.
    Checking(Opening),
    /// Invalid: writing the GOAWAY, this many bytes of it written.
    Refusing(usize),
    /// The GOAWAY is out: ending the write side.
    Closing,
    /// Reading and dropping what the client still sends, this many bytes so
    /// far, so that the close is a FIN behind the GOAWAY and not a reset
    /// that could destroy it before the client reads it.
    Draining(usize),
}

/// What a connection's first bytes must be.
#[derive(Debug)]
enum Opening {
    /// The HTTP/2 connection preface.
    Http2(PrefaceCheck),
    /// On a cleartext listener, an HTTP/1.x request line, or else they are
    /// an invalid HTTP/2 preface.
    Http1(RequestLineCheck),
}

impl Opening {
    fn feed(&mut self, bytes: &[u8]) -> Preface {
        match self {
            Opening::Http2(check) => check.feed(bytes),
            Opening::Http1(check) => check.feed(bytes),
        }
    }
}

/// Most a refused client's bytes are read and dropped before the close.
const DRAIN_LIMIT: usize = 64 * 1024;

impl<I> Watched<I> {
    /// `io`, reporting to `activity`; the HTTP/2 preface is checked when
    /// `activity` says the connection speaks HTTP/2, and the first request
    /// line when it speaks HTTP/1 in the clear (`cleartext`), where nothing
    /// but its first bytes told it from HTTP/2.
    pub(super) fn new(io: I, activity: Arc<Activity>, cleartext: bool) -> Watched<I> {
        let preface = if activity.h2.load(Ordering::Relaxed) {
            PrefaceState::Checking(Opening::Http2(PrefaceCheck::default()))
        } else if cleartext {
            PrefaceState::Checking(Opening::Http1(RequestLineCheck::default()))
        } else {
            PrefaceState::Done
        };
        Watched { io, activity, scan: HeadScan::default(), preface }
    }

    /// The stream itself, to wait on its readiness while the connection is
    /// parked ([`serving`](super::serving)).
    pub(super) fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Watched<I> {
    /// After an invalid preface: write the GOAWAY, end the write side, drain
    /// what the client still sends, then fail the read so hyper closes.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let refused = || std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid HTTP/2 connection preface");
        loop {
            match self.preface {
                PrefaceState::Refusing(written) if written < GOAWAY_PROTOCOL_ERROR.len() => {
                    match std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &GOAWAY_PROTOCOL_ERROR[written..])) {
                        Ok(0) | Err(_) => return Poll::Ready(Err(refused())),
                        Ok(n) => self.preface = PrefaceState::Refusing(written + n),
                    }
                }
                PrefaceState::Refusing(_) => {
                    if std::task::ready!(Pin::new(&mut self.io).poll_flush(cx)).is_err() {
                        return Poll::Ready(Err(refused()));
                    }
                    self.preface = PrefaceState::Closing;
                }
                PrefaceState::Closing => {
                    if std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx)).is_err() {
                        return Poll::Ready(Err(refused()));
                    }
                    self.preface = PrefaceState::Draining(0);
                }
                PrefaceState::Draining(dropped) => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    let read = std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut sink));
                    let n = sink.filled().len();
                    if read.is_err() || n == 0 || dropped + n >= DRAIN_LIMIT {
                        return Poll::Ready(Err(refused()));
                    }
                    self.preface = PrefaceState::Draining(dropped + n);
                }
                PrefaceState::Done | PrefaceState::Checking(_) => return Poll::Ready(Err(refused())),
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !matches!(this.preface, PrefaceState::Done | PrefaceState::Checking(_)) {
            return this.poll_refuse(cx);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if let PrefaceState::Checking(check) = &mut this.preface {
                match check.feed(fresh) {
                    Preface::Pending => {}
                    Preface::Valid => this.preface = PrefaceState::Done,
                    Preface::Invalid => {
                        // hyper never sees these bytes.
                        buf.set_filled(before);
                        this.preface = PrefaceState::Refusing(0);
                        return this.poll_refuse(cx);
                    }
                }
            }
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
