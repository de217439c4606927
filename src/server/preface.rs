//! The client's HTTP/2 connection preface, checked as it arrives, and the
//! `GOAWAY(PROTOCOL_ERROR)` an invalid one is answered with.
//!
//! RFC 9113 §3.4 makes an invalid preface a connection error of type
//! PROTOCOL_ERROR, which §5.4.1 answers with a GOAWAY before the close.
//! hyper's HTTP/2 server (h2) only drops such a connection, and lets a
//! first frame other than SETTINGS pass; the check lives here, in the byte
//! stream, so it holds over h2c and TLS alike.

/// The client connection preface (RFC 9113 §3.4), without its SETTINGS.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where, after the preface, the first frame's type sits (a frame header
/// is a 3-byte length, then the type).
const FIRST_FRAME_TYPE_AT: usize = PREFACE.len() + 3;

/// The type of a SETTINGS frame, which must come first.
const SETTINGS: u8 = 0x4;

/// `GOAWAY`, last stream 0, `PROTOCOL_ERROR`, with a reason as debug data.
pub(super) const GOAWAY_PROTOCOL_ERROR: &[u8] = b"\x00\x00\x22\x07\x00\x00\x00\x00\x00\
    \x00\x00\x00\x00\x00\x00\x00\x01\
    invalid connection preface";

/// How far a connection's first bytes are checked against the preface and
/// the type of the first frame: a byte count, independent of how reads
/// split them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct PrefaceCheck {
    seen: usize,
}

/// What a connection's first bytes so far say: here of the HTTP/2 preface,
/// in [`request_line`](super::request_line) of the line that stands in its
/// place on a cleartext HTTP/1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Preface {
    /// Right so far, with more to check.
    Pending,
    /// The preface and the first frame's type are right (or the request
    /// line is).
    Valid,
    /// Not an HTTP/2 connection preface (nor an HTTP/1.x request line).
    Invalid,
}

impl PrefaceCheck {
    /// Check `bytes`, which continue what came before.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Preface {
        for &byte in bytes {
            if self.seen > FIRST_FRAME_TYPE_AT {
                break;
            }
            let right = match self.seen {
                at if at < PREFACE.len() => byte == PREFACE[at],
                FIRST_FRAME_TYPE_AT => byte == SETTINGS,
                _ => true,
            };
            if !right {
                return Preface::Invalid;
            }
            self.seen += 1;
        }
        if self.seen > FIRST_FRAME_TYPE_AT {
            Preface::Valid
        } else {
            Preface::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Preface, PrefaceCheck, GOAWAY_PROTOCOL_ERROR, PREFACE};

    fn check(bytes: &[u8]) -> Preface {
        PrefaceCheck::default().feed(bytes)
    }

    #[test]
    fn the_preface_and_a_settings_frame_are_valid() {
        let mut good = PREFACE.to_vec();
        good.extend(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(check(&good), Preface::Valid);
        assert_eq!(check(&good[..27]), Preface::Pending);
        assert_eq!(check(b"PRI "), Preface::Pending);
    }

    #[test]
    fn a_wrong_tail_or_first_frame_is_invalid() {
        assert_eq!(check(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Preface::Invalid);
        assert_eq!(check(b"INVALID CONNECTION PREFACE\r\n\r\n"), Preface::Invalid);
        let mut ping_first = PREFACE.to_vec();
        ping_first.extend(b"\x00\x00\x08\x06");
        assert_eq!(check(&ping_first), Preface::Invalid);
    }

    #[test]
    fn any_split_gives_the_same_answer() {
        let mut good = PREFACE.to_vec();
        good.extend(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00rest");
        let mut bad = good.clone();
        bad[20] = b'X';
        for bytes in [good, bad] {
            let whole = check(&bytes);
            for at in 0..=bytes.len() {
                let mut split = PrefaceCheck::default();
                let first = split.feed(&bytes[..at]);
                let answer = if first == Preface::Invalid { first } else { split.feed(&bytes[at..]) };
                assert_eq!(answer, whole, "split at {at}");
            }
        }
    }

    #[test]
    fn the_goaway_is_one_well_formed_frame() {
        let len = usize::from(GOAWAY_PROTOCOL_ERROR[2]);
        assert_eq!(GOAWAY_PROTOCOL_ERROR.len(), 9 + len);
        assert_eq!(GOAWAY_PROTOCOL_ERROR[3], 0x7, "type GOAWAY");
        assert_eq!(&GOAWAY_PROTOCOL_ERROR[9..17], &[0, 0, 0, 0, 0, 0, 0, 1], "last stream 0, PROTOCOL_ERROR");
    }
}
