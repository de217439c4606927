//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, outside the
//! stable build): each takes the fuzzer's bytes, derives the read splits
//! from their first bytes, and checks the parser's invariants, panicking
//! when one breaks. Not an API: hidden from the docs, and it may change
//! with the parsers. The same invariants run as bounded property tests in
//! `cargo test`, beside each parser.

/// Up to 8 split points from the input's first bytes (the fuzzer learns to
/// use them), and the rest of the input.
fn cuts_and_rest(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 9).min(rest.len() / 2);
    let (cut_bytes, rest) = rest.split_at(count * 2);
    let cuts = cut_bytes.chunks(2).map(|c| usize::from(u16::from_le_bytes([c[0], c[1]]))).collect();
    (cuts, rest)
}

/// The config parser and validator: any text gives a valid config or an
/// error with a position.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::config::props::check_config(text);
    }
}

/// The request head scan: any split gives the same answer.
pub fn head_scan(data: &[u8]) {
    let (cuts, rest) = cuts_and_rest(data);
    crate::server::props::check_head_scan(rest, &cuts);
}

/// The inline client's response reader (head and body): any split reads
/// the same response. The first byte's high bit asks for a `HEAD` request.
pub fn h1_response(data: &[u8]) {
    let is_head = data.first().is_some_and(|b| b & 0x80 != 0);
    let (cuts, rest) = cuts_and_rest(data);
    crate::pool::h1::props::check_response(rest, &cuts, is_head, false);
}

/// The chunked body decoder: any split decodes the same.
pub fn chunked(data: &[u8]) {
    let (cuts, rest) = cuts_and_rest(data);
    crate::pool::h1::props::check_response(rest, &cuts, false, true);
}
