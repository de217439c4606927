//! cutover: codec buffers an idle server connection released, kept per
//! thread for the next connection that wakes instead of freed.
//!
//! A server connection with no stream open drops its read and write buffers
//! (`FramedRead::release_idle_buffers`, `FramedWrite::release_idle_buffer`),
//! so a client that sends one request at a time would otherwise cost every
//! request an 8 KiB and a 16 KiB allocation and their frees, blocks too
//! large for the allocator's per-thread cache. A few spares per thread serve
//! a busy thread's connections in turn. The count is bounded, so idle memory
//! does not grow with connections, and buffers grown past `LARGEST` are
//! freed as before.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// Spares of each kind kept per thread.
const KEPT: usize = 16;
/// The largest buffer kept: twice the codec's own sizes (8 KiB read,
/// 16 KiB write), so a buffer that grew for one large frame is freed.
const LARGEST: usize = 32 * 1024;

type Spares = LocalKey<RefCell<Vec<BytesMut>>>;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Keep `buf`, emptied, if it alone owns a block of at least `size` bytes
/// and no more than `LARGEST`, and there is room (and the thread is not
/// being torn down). A read buffer still shares its block with frames it
/// handed on until they are dropped; kept, it would pin their whole block.
fn keep(spares: &'static Spares, mut buf: BytesMut, size: usize) {
    buf.clear();
    if !buf.try_reclaim(size) || buf.capacity() > LARGEST {
        return;
    }
    let _ = spares.try_with(move |kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(buf);
        }
    });
}

/// A kept buffer, empty, if any.
fn take(spares: &'static Spares) -> Option<BytesMut> {
    spares.try_with(|kept| kept.borrow_mut().pop()).ok().flatten()
}

/// Keep a read buffer that holds nothing.
pub(super) fn give_read(buf: BytesMut, size: usize) {
    keep(&READ, buf, size);
}

/// A kept read buffer, if any.
pub(super) fn take_read() -> Option<BytesMut> {
    take(&READ)
}

/// Keep a write buffer whose bytes are all written.
pub(super) fn give_write(buf: BytesMut, size: usize) {
    keep(&WRITE, buf, size);
}

/// A kept write buffer, if any.
pub(super) fn take_write() -> Option<BytesMut> {
    take(&WRITE)
}
