//! Request IDs: keep the client's, or make one.
//!
//! A request ID is what a user quotes in a support ticket and what joins the
//! proxy's log line to the backend's. The client's own ID (`X-Request-Id` by
//! default) is kept only when it is short and made of safe characters: it is
//! written into log lines and passed to backends, so anything else could
//! forge log fields or smuggle bytes into a backend's logs. A missing or
//! unsafe ID is replaced by a new one: 32 hex digits from the request's
//! seeded RNG, so a seeded run makes the same IDs.

use http::header::{Entry, HeaderMap, HeaderName};
use http::HeaderValue;
use rand::Rng;

/// The longest client-supplied ID kept, in bytes.
pub const DEFAULT_MAX_LEN: usize = 128;

/// Whether `value` is a request ID worth keeping: 1 to `max_len` bytes of
/// ASCII letters, digits and `-._:+/=@`.
pub fn acceptable(value: &[u8], max_len: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._:+/=@".contains(&b))
}

/// The request's ID: the client's `given` one when acceptable, otherwise a
/// new one drawn from `rng`.
pub fn keep_or_make(given: Option<&HeaderValue>, max_len: usize, rng: &mut impl Rng) -> HeaderValue {
    match given {
        Some(value) if acceptable(value.as_bytes(), max_len) => super::slab::unique(value.clone()),
        _ => make(rng),
    }
}

/// Give `headers` their ID under `name` (see `keep_or_make`; of several, the
/// first is the one judged) and return it. One look-up of the name, not a
/// read and then an insert: this runs for every request.
pub fn settle(headers: &mut HeaderMap, name: &HeaderName, max_len: usize, rng: &mut impl Rng) -> HeaderValue {
    match headers.entry(name) {
        Entry::Occupied(mut slot) => {
            let id = keep_or_make(Some(slot.get()), max_len, rng);
            // Replaces every value: the backend sees the one ID.
            slot.insert(id.clone());
            id
        }
        Entry::Vacant(slot) => slot.insert(make(rng)).clone(),
    }
}

/// A new ID: 128 random bits as 32 lowercase hex digits.
pub fn make(rng: &mut impl Rng) -> HeaderValue {
    // Written on the stack, then cut from the thread's slab (see `slab`).
    let mut bits = [0u8; 16];
    bits[..8].copy_from_slice(&rng.random::<u64>().to_be_bytes());
    bits[8..].copy_from_slice(&rng.random::<u64>().to_be_bytes());
    let mut id = [0u8; 32];
    super::slab::hex_into(&bits, &mut id);
    // Hex digits are always a valid header value.
    super::slab::value(&id).unwrap_or_else(|| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_safe_client_id_is_kept() {
        let mut rng = SmallRng::seed_from_u64(1);
        let given = HeaderValue::from_static("req-42.a:b/c+d=e@f_G");
        assert_eq!(keep_or_make(Some(&given), DEFAULT_MAX_LEN, &mut rng), given);
    }

    #[test]
    fn unsafe_or_long_ids_are_replaced() {
        let mut rng = SmallRng::seed_from_u64(1);
        for bad in ["", "has space", "quote\"", "tab\t", "semi;colon", "ünï"] {
            let given = HeaderValue::from_bytes(bad.as_bytes()).expect("value");
            let made = keep_or_make(Some(&given), DEFAULT_MAX_LEN, &mut rng);
            assert_ne!(made, given, "{bad:?} replaced");
            assert_eq!(made.len(), 32);
        }
        let long = HeaderValue::from_str(&"a".repeat(DEFAULT_MAX_LEN + 1)).expect("value");
        assert_eq!(keep_or_make(Some(&long), DEFAULT_MAX_LEN, &mut rng).len(), 32);
        let exact = HeaderValue::from_str(&"a".repeat(DEFAULT_MAX_LEN)).expect("value");
        assert_eq!(keep_or_make(Some(&exact), DEFAULT_MAX_LEN, &mut rng), exact);
    }

    #[test]
    fn settle_keeps_a_safe_id_and_replaces_the_rest() {
        let name = HeaderName::from_static("x-request-id");
        let mut rng = SmallRng::seed_from_u64(1);
        let mut headers = HeaderMap::new();
        let made = settle(&mut headers, &name, DEFAULT_MAX_LEN, &mut rng);
        assert_eq!(made.len(), 32);
        assert_eq!(headers.get_all(&name).iter().collect::<Vec<_>>(), [&made]);

        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_static("client-1"));
        headers.append(&name, HeaderValue::from_static("client-2"));
        assert_eq!(settle(&mut headers, &name, DEFAULT_MAX_LEN, &mut rng), "client-1");
        assert_eq!(headers.get_all(&name).iter().collect::<Vec<_>>(), ["client-1"]);

        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_static("bad id"));
        let replaced = settle(&mut headers, &name, DEFAULT_MAX_LEN, &mut rng);
        assert_eq!(replaced.len(), 32);
        assert_eq!(headers.get_all(&name).iter().collect::<Vec<_>>(), [&replaced]);
    }

    #[test]
    fn ids_kept_or_made_are_never_indexed() {
        let name = HeaderName::from_static("x-request-id");
        let mut rng = SmallRng::seed_from_u64(1);
        for given in [None, Some("client-1"), Some("bad id")] {
            let mut headers = HeaderMap::new();
            if let Some(given) = given {
                headers.append(&name, HeaderValue::from_static(given));
            }
            let id = settle(&mut headers, &name, DEFAULT_MAX_LEN, &mut rng);
            assert!(id.is_sensitive(), "{given:?}");
            assert!(headers.get(&name).is_some_and(HeaderValue::is_sensitive), "{given:?}");
        }
    }

    #[test]
    fn made_ids_are_hex_and_follow_the_seed() {
        let a = make(&mut SmallRng::seed_from_u64(7));
        let b = make(&mut SmallRng::seed_from_u64(7));
        assert_eq!(a, b);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(make(&mut SmallRng::seed_from_u64(8)), a);
    }
}
