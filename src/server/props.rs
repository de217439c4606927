//! The head scan's invariants, for the property tests below and the fuzz
//! target (`crate::fuzzing`): on any bytes, split into reads at any points,
//! it never panics, and it says the same of the first head.

use super::head_scan::HeadScan;

/// What the scan says of the first head in a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstHead {
    /// It ended, framed both ways (or not).
    Ended { conflict: bool },
    /// The bytes ended inside it.
    Unfinished,
}

/// Feed `pieces` to a fresh scan, one read each, until the first head ends.
pub(crate) fn scan_first_head<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> FirstHead {
    let mut scan = HeadScan::default();
    for piece in pieces {
        let conflict = scan.feed(piece);
        if conflict || !scan.in_head() {
            return FirstHead::Ended { conflict };
        }
    }
    FirstHead::Unfinished
}

pub(crate) use crate::reads::split;

/// The invariant: `bytes` in one read and split at `cuts` give the same
/// answer. Panics (for the fuzzer) if not.
pub(crate) fn check_head_scan(bytes: &[u8], cuts: &[usize]) {
    let whole = scan_first_head([bytes]);
    let pieces = split(bytes, cuts);
    let split_answer = scan_first_head(pieces.iter().copied());
    assert_eq!(whole, split_answer, "head scan differs when split at {cuts:?}: {:?}", String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::{check_head_scan, scan_first_head, split, FirstHead};

    /// Request heads built from lines that matter and lines that do not,
    /// with both line endings, and some random bytes.
    fn head(rng: &mut SmallRng) -> Vec<u8> {
        const LINES: &[&[u8]] = &[
            b"POST / HTTP/1.1",
            b"Host: a",
            b"Content-Length: 5",
            b"content-length:5",
            b"Transfer-Encoding: chunked",
            b"TRANSFER-ENCODING:chunked",
            b"X-Content-Length: 1",
            b"transfer-encodin: x",
            b"",
            b"\r",
        ];
        let mut out = Vec::new();
        for _ in 0..rng.random_range(0..8) {
            if rng.random_ratio(1, 8) {
                out.extend((0..rng.random_range(0..24)).map(|_| rng.random::<u8>()));
            } else {
                out.extend(LINES[rng.random_range(0..LINES.len())]);
            }
            out.extend(if rng.random() { &b"\r\n"[..] } else { b"\n" });
        }
        out
    }

    #[test]
    fn any_split_gives_the_same_answer() {
        let mut rng = SmallRng::seed_from_u64(21);
        for _ in 0..4_000 {
            let bytes = head(&mut rng);
            let cuts: Vec<usize> = (0..rng.random_range(0..6)).map(|_| rng.random_range(0..=bytes.len())).collect();
            check_head_scan(&bytes, &cuts);
        }
    }

    #[test]
    fn every_single_cut_of_a_conflicting_head_is_flagged() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello";
        for at in 0..=bytes.len() {
            assert_eq!(scan_first_head(split(bytes, &[at])), FirstHead::Ended { conflict: true }, "cut at {at}");
        }
        // Byte by byte.
        assert_eq!(scan_first_head(bytes.chunks(1)), FirstHead::Ended { conflict: true });
    }
}
