//! W3C trace context (`traceparent`, `tracestate`): passed through, started
//! when absent, replaced when malformed.
//!
//! cutover is not a tracer: it records no spans. It only keeps the trace a
//! client started intact on its way to the backend, and logs its trace ID,
//! so that a backend's traces and the proxy's log lines join up. When a
//! request carries no trace context, the proxy can start one (on by
//! default), so that every request has a trace ID to look for; it marks the
//! trace sampled, so that backends whose tracers follow their parent's
//! decision record it. A malformed `traceparent` is never forwarded: a
//! backend's tracer would discard it anyway, and the request gets a fresh
//! one instead; its `tracestate`, which belongs to the broken parent, goes
//! with it (W3C Trace Context §3.3).

use http::header::{Entry, HeaderName};
use http::{HeaderMap, HeaderValue};
use rand::Rng;

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A parsed `traceparent`'s identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The 16-byte trace ID.
    pub trace_id: [u8; 16],
    /// The 8-byte parent (span) ID.
    pub parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parse a `traceparent` value (W3C Trace Context §3.2). Versions above
    /// `00` are read by their first four fields, as the spec asks; `ff`, an
    /// all-zero ID, upper-case hex or a wrong length is malformed.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let [version] = unhex::<1>(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        let trace_id = unhex::<16>(&value[3..35])?;
        let parent_id = unhex::<8>(&value[36..52])?;
        let [flags] = unhex::<1>(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, flags })
    }

    /// A new trace, sampled, with random IDs from `rng`: three 64-bit
    /// draws (an array of random bytes draws once per byte).
    pub fn start(rng: &mut impl Rng) -> TraceParent {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.random::<u64>().to_be_bytes());
        trace_id[8..].copy_from_slice(&rng.random::<u64>().to_be_bytes());
        let mut parent_id = rng.random::<u64>().to_be_bytes();
        // All-zero IDs are invalid; the chance is negligible, the fix is cheap.
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        TraceParent { trace_id, parent_id, flags: 0x01 }
    }

    /// The trace ID as 32 lowercase hex digits, as logged.
    pub fn trace_id_hex(&self) -> String {
        let mut text = [0u8; 32];
        super::slab::hex_into(&self.trace_id, &mut text);
        text.iter().map(|&b| char::from(b)).collect()
    }

    /// The version-00 header value.
    pub fn to_header(&self) -> HeaderValue {
        // Written on the stack, then cut from the thread's slab (see `slab`).
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        super::slab::hex_into(&self.trace_id, &mut text[3..35]);
        super::slab::hex_into(&self.parent_id, &mut text[36..52]);
        super::slab::hex_into(&[self.flags], &mut text[53..55]);
        // Hex digits and dashes are always a valid header value.
        super::slab::value(&text).unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

/// What became of a request's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid `traceparent` passed through unchanged.
    Kept,
    /// None was present; one was started.
    Started,
    /// A malformed one (or several) was replaced by a new trace.
    Replaced,
    /// None was present, and starting traces is off.
    Absent,
    /// A malformed one was removed, and starting traces is off.
    Removed,
}

/// Bring `headers`' trace context into shape for the backend: keep a valid
/// `traceparent` (and its `tracestate`) unchanged; start one when absent and
/// `start` is set; replace a malformed one (dropping its `tracestate`), or
/// remove it when `start` is off. Returns the outcome and the trace ID.
pub fn prepare(headers: &mut HeaderMap, start: bool, rng: &mut impl Rng) -> (Outcome, Option<TraceParent>) {
    // One look-up of the name in the usual cases (absent, or one valid
    // value): this runs for every request.
    match headers.entry(&TRACEPARENT) {
        Entry::Vacant(slot) => {
            if !start {
                return (Outcome::Absent, None);
            }
            let parent = TraceParent::start(rng);
            slot.insert(parent.to_header());
            return (Outcome::Started, Some(parent));
        }
        Entry::Occupied(slot) => {
            let mut values = slot.iter();
            // Two `traceparent` fields are as malformed as one bad one (§3.2).
            if let (Some(value), None) = (values.next(), values.next()) {
                if let Some(parent) = TraceParent::parse(value.as_bytes()) {
                    return (Outcome::Kept, Some(parent));
                }
            }
        }
    }
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    if !start {
        return (Outcome::Removed, None);
    }
    let parent = TraceParent::start(rng);
    headers.insert(TRACEPARENT.clone(), parent.to_header());
    (Outcome::Replaced, Some(parent))
}

/// Each byte's value as a lowercase hex digit, `0xff` for any other byte.
static NIBBLE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// `2 * N` lowercase hex digits as `N` bytes; `None` if any is not one.
/// Looked up in a table and checked once at the end: a `traceparent` is
/// read for every logged request.
fn unhex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (i, byte) in out.iter_mut().enumerate() {
        let (hi, lo) = (NIBBLE[usize::from(digits[2 * i])], NIBBLE[usize::from(digits[2 * i + 1])]);
        bad |= hi | lo;
        *byte = (hi << 4) | lo;
    }
    (bad & 0xf0 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn parses_the_spec_example() {
        let parent = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.to_header(), VALID);
    }

    #[test]
    fn refuses_malformed_values() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
        // A later version may carry more fields after a dash.
        assert!(TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn every_field_takes_only_lowercase_hex_digits() {
        let valid = VALID.as_bytes();
        for at in [0, 1, 3, 20, 34, 36, 51, 53, 54] {
            for byte in 0..=255u8 {
                let mut value = valid.to_vec();
                value[at] = byte;
                let digit = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
                // A version of `ff` is refused for itself.
                let version_ff = at < 2 && byte == b'f' && valid[1 - at] == b'f';
                let parsed = TraceParent::parse(&value);
                assert_eq!(parsed.is_some(), digit && !version_ff, "byte {byte:#04x} at {at}");
                if let (Some(parsed), true) = (parsed, (3..35).contains(&at)) {
                    let nibble = u8::try_from(char::from(byte).to_digit(16).expect("hex")).expect("nibble");
                    let i = (at - 3) / 2;
                    let expected = if (at - 3) % 2 == 0 {
                        nibble << 4 | parsed.trace_id[i] & 0x0f
                    } else {
                        parsed.trace_id[i] & 0xf0 | nibble
                    };
                    assert_eq!(parsed.trace_id[i], expected);
                }
            }
        }
    }

    #[test]
    fn a_valid_context_passes_unchanged() {
        let mut map = headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, "congo=t61rcWkgMzE")]);
        let before = map.clone();
        let (outcome, parent) = prepare(&mut map, true, &mut SmallRng::seed_from_u64(1));
        assert_eq!(outcome, Outcome::Kept);
        assert_eq!(parent.map(|p| p.trace_id_hex()).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(map, before);
    }

    #[test]
    fn an_absent_context_is_started_when_asked() {
        let mut map = HeaderMap::new();
        let (outcome, parent) = prepare(&mut map, true, &mut SmallRng::seed_from_u64(1));
        assert_eq!(outcome, Outcome::Started);
        let sent = map.get(&TRACEPARENT).expect("started");
        assert_eq!(TraceParent::parse(sent.as_bytes()), parent);
        let mut map = HeaderMap::new();
        assert_eq!(prepare(&mut map, false, &mut SmallRng::seed_from_u64(1)), (Outcome::Absent, None));
        assert!(map.is_empty());
    }

    #[test]
    fn a_malformed_context_is_replaced_with_its_state() {
        let mut map = headers(&[(&TRACEPARENT, "00-zz-bad"), (&TRACESTATE, "congo=t61rcWkgMzE")]);
        let (outcome, parent) = prepare(&mut map, true, &mut SmallRng::seed_from_u64(1));
        assert_eq!(outcome, Outcome::Replaced);
        assert_eq!(map.get_all(&TRACEPARENT).iter().count(), 1);
        assert_eq!(TraceParent::parse(map[&TRACEPARENT].as_bytes()), parent);
        assert!(map.get(&TRACESTATE).is_none());

        let mut twice = headers(&[(&TRACEPARENT, VALID), (&TRACEPARENT, VALID)]);
        assert_eq!(prepare(&mut twice, false, &mut SmallRng::seed_from_u64(1)), (Outcome::Removed, None));
        assert!(twice.get(&TRACEPARENT).is_none());
    }
}
