//! Bytes cut into the reads a socket might deliver them in: the one tool
//! the parsers' property tests and fuzz targets share, to check that a
//! result never depends on where the reads end.

/// `bytes` split at `cuts` (any offsets: out-of-range ones are clamped,
/// order does not matter).
#[doc(hidden)]
pub fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for cut in cuts {
        pieces.push(&bytes[from..cut]);
        from = cut;
    }
    pieces.push(&bytes[from..]);
    pieces
}
