//! Header values the proxy makes for every request (a request ID, a
//! `traceparent`), cut from a per-thread buffer instead of allocated one by
//! one.
//!
//! `HeaderValue::from_bytes` copies its bytes into an allocation of their
//! own, and the first clone of such a value allocates again (the bytes
//! become shared). These values are small and made for every request, so
//! each thread writes them into a shared 4 KiB block and hands out
//! reference-counted slices of it: cloning one is a count, and a new block
//! is allocated once per about a hundred values. A block lives until the
//! last value cut from it is dropped, so a value held for long keeps at
//! most one block alive.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// Bytes per block.
const BLOCK: usize = 4096;

thread_local! {
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Write `bytes` into `out` as lowercase hex, two digits a byte; `out`
/// holds exactly twice as many bytes. A plain indexed loop: the values are
/// made for every request, and iterator chains over the digits compiled to
/// several times the work.
pub(super) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// A header value holding `text`, which must be a valid header value
/// (visible ASCII); `None` if it is not. The value is marked never to be
/// indexed (see [`unique`]).
pub(super) fn value(text: &[u8]) -> Option<HeaderValue> {
    cut(text).map(unique)
}

/// `value` marked as one no HTTP/2 peer should keep in its header table
/// (HPACK's never-indexed literal): a request ID or a trace context is
/// different on every request, so an entry for it is never used again, and
/// each one would push a useful entry (a server name, a content type) out of
/// the table and cost the encoder a copy. HTTP/1.1 ignores the mark.
pub(super) fn unique(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

fn cut(text: &[u8]) -> Option<HeaderValue> {
    if text.len() > BLOCK / 4 {
        return HeaderValue::from_bytes(text).ok();
    }
    let bytes = SLAB
        .try_with(|slab| {
            let mut slab = slab.borrow_mut();
            if slab.capacity() - slab.len() < text.len() {
                *slab = BytesMut::with_capacity(BLOCK);
            }
            slab.extend_from_slice(text);
            slab.split().freeze()
        })
        .ok();
    match bytes {
        Some(bytes) => HeaderValue::from_maybe_shared(bytes).ok(),
        // The thread is being torn down: an allocation of its own.
        None => HeaderValue::from_bytes(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_hold_their_text_and_outlive_their_block() {
        let first = value(b"00-abc").expect("valid");
        let many: Vec<HeaderValue> =
            (0..1000).map(|i| value(format!("id-{i:04}").as_bytes()).expect("valid")).collect();
        assert_eq!(first, "00-abc");
        for (i, v) in many.iter().enumerate() {
            assert_eq!(v, format!("id-{i:04}").as_str());
        }
        let cloned = many[999].clone();
        drop(many);
        assert_eq!(cloned, "id-0999");
    }

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        let mut out = [0u8; 6];
        hex_into(&[0x00, 0xab, 0x7f], &mut out);
        assert_eq!(&out, b"00ab7f");
    }

    #[test]
    fn values_are_never_indexed() {
        assert!(value(b"00-abc").expect("valid").is_sensitive());
        assert!(value(&[b'a'; BLOCK]).expect("valid").is_sensitive());
    }

    #[test]
    fn invalid_or_long_text_is_handled() {
        assert!(value(b"line\nbreak").is_none());
        let long = vec![b'a'; BLOCK];
        assert_eq!(value(&long).expect("valid").len(), BLOCK);
    }
}
