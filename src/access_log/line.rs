//! The two line formats, written as bytes straight into a buffer.
//!
//! A line is made once per logged request, so it is written without a
//! `String` per field or per line: strings escaped in place, integers as
//! decimal digits, durations as whole microseconds printed as milliseconds,
//! and the timestamp's date and time of day taken from a per-thread copy
//! that changes once a second. The output is byte for byte what the
//! documented formats say (JSON as `serde_json` prints it: compact, the
//! same escapes, the shortest decimal of each number).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::record::{Choice, Format, Kind, Record};
use super::slab::hex_into;
use crate::timestamp::rfc3339;

impl Record<'_> {
    /// Append this record as one line (with its `\n`) to `out`.
    pub fn write_line(&self, format: Format, out: &mut Vec<u8>) {
        match format {
            Format::Json => json(self, out),
            Format::Text => text(self, out),
        }
        out.push(b'\n');
    }
}

/// Append `record` as one JSON object, without its newline.
fn json(record: &Record<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    time(record.time, out);
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(kind(record.kind).as_bytes());
    out.extend_from_slice(b"\",\"client\":\"");
    client(record.client, out);
    out.extend_from_slice(b"\",\"method\":");
    json_plain(record.method.as_str(), out);
    out.extend_from_slice(b",\"host\":");
    json_str(record.host(), out);
    out.extend_from_slice(b",\"path\":");
    json_str(record.path(), out);
    if let Some(query) = record.query() {
        out.extend_from_slice(b",\"query\":");
        json_str(query, out);
    }
    out.extend_from_slice(b",\"protocol\":");
    json_plain(record.protocol, out);
    out.extend_from_slice(b",\"status\":");
    int(u64::from(record.status), out);
    out.extend_from_slice(b",\"bytes_in\":");
    int(record.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    int(record.bytes_out, out);
    out.extend_from_slice(b",\"duration_ms\":");
    json_millis(record.duration, out);
    out.extend_from_slice(b",\"upstream_ttfb_ms\":");
    match record.upstream_ttfb {
        Some(ttfb) => json_millis(ttfb, out),
        None => out.extend_from_slice(b"null"),
    }
    // Route and pool names are restricted to letters, digits, `-`, `_` and
    // `.`, and a backend is a checked `host:port` (see `config::validate`).
    out.extend_from_slice(b",\"route\":");
    json_plain_opt(record.route.as_deref(), out);
    out.extend_from_slice(b",\"pool\":");
    json_plain_opt(record.pool.as_deref(), out);
    out.extend_from_slice(b",\"backend\":");
    json_plain_opt(record.backend, out);
    out.extend_from_slice(b",\"revision\":");
    int(record.revision, out);
    out.extend_from_slice(b",\"choice\":");
    json_plain_opt(record.choice.map(Choice::as_str), out);
    out.extend_from_slice(b",\"retries\":");
    int(u64::from(record.retries), out);
    out.extend_from_slice(b",\"failure\":");
    json_plain_opt(record.failure, out);
    out.extend_from_slice(b",\"request_id\":");
    match record.request_id() {
        Some(id) => quoted(id, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"trace_id\":");
    match &record.trace_id {
        Some(id) => {
            out.push(b'"');
            hex(id, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Append `record` as the fixed text line, without its newline:
/// `time client "METHOD host path?query PROTO" status in out duration ttfb
/// route pool backend rev choice retries failure request_id trace_id`,
/// with `-` for what is absent. Values that come from the request are
/// quoted and escaped, so a line always splits the same way.
fn text(record: &Record<'_>, out: &mut Vec<u8>) {
    time(record.time, out);
    out.push(b' ');
    client(record.client, out);
    out.extend_from_slice(b" \"");
    text_str(record.method.as_str(), out);
    out.push(b' ');
    text_str(record.host(), out);
    out.push(b' ');
    text_str(record.path(), out);
    if let Some(query) = record.query() {
        out.push(b'?');
        text_str(query, out);
    }
    out.push(b' ');
    out.extend_from_slice(record.protocol.as_bytes());
    out.extend_from_slice(b"\" ");
    int(u64::from(record.status), out);
    out.push(b' ');
    int(record.bytes_in, out);
    out.push(b' ');
    int(record.bytes_out, out);
    out.push(b' ');
    text_millis(record.duration, out);
    out.push(b' ');
    match record.upstream_ttfb {
        Some(ttfb) => text_millis(ttfb, out),
        None => out.push(b'-'),
    }
    for value in [record.route.as_deref(), record.pool.as_deref(), record.backend] {
        out.push(b' ');
        out.extend_from_slice(value.unwrap_or("-").as_bytes());
    }
    out.extend_from_slice(b" rev=");
    int(record.revision, out);
    out.push(b' ');
    out.extend_from_slice(record.choice.map_or("-", Choice::as_str).as_bytes());
    out.extend_from_slice(b" retries=");
    int(u64::from(record.retries), out);
    out.push(b' ');
    out.extend_from_slice(record.failure.unwrap_or("-").as_bytes());
    out.push(b' ');
    match record.request_id() {
        Some(id) => quoted(id, out),
        None => out.push(b'-'),
    }
    out.push(b' ');
    match &record.trace_id {
        Some(id) => {
            out.push(b'"');
            hex(id, out);
            out.push(b'"');
        }
        None => out.push(b'-'),
    }
    if record.kind == Kind::Tunnel {
        out.extend_from_slice(b" tunnel");
    }
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => "request",
        Kind::Tunnel => "tunnel",
    }
}

thread_local! {
    /// The last second formatted on this thread, and its
    /// `YYYY-MM-DDTHH:MM:SS`: lines of one second share it.
    static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// RFC 3339 UTC with milliseconds (`2026-11-26T10:00:00.123Z`).
fn time(time: SystemTime, out: &mut Vec<u8>) {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut second = cell.borrow_mut();
        if second.0 != secs {
            let text = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            second.1.clear();
            // `rfc3339` ends in `Z`, which the milliseconds go before.
            second.1.extend_from_slice(text.trim_end_matches('Z').as_bytes());
            second.0 = secs;
        }
        out.extend_from_slice(&second.1);
    });
    let millis = since.subsec_millis();
    out.extend_from_slice(&[b'.', digit(millis / 100), digit(millis / 10 % 10), digit(millis % 10), b'Z']);
}

fn digit(n: u32) -> u8 {
    // `n` is one decimal digit, so the cast keeps it whole.
    b'0' + n as u8
}

/// The client's address as `SocketAddr` displays it.
fn client(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            // `255.255.255.255:65535` at most: made in a fixed array and
            // appended whole, then cut to length, so no copy has a length
            // known only at run time.
            let mut text = [0u8; 21];
            let mut at = 0;
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                decimal(u32::from(octet), &[100, 10], &mut text, &mut at);
                text[at] = if i == 3 { b':' } else { b'.' };
                at += 1;
            }
            decimal(u32::from(v4.port()), &[10_000, 1_000, 100, 10], &mut text, &mut at);
            let end = out.len() + at;
            out.extend_from_slice(&text);
            out.truncate(end);
        }
        SocketAddr::V6(_) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{addr}");
        }
    }
}

/// Write `n` (below ten times the first of `divisors`, which go down by
/// tens to 10) in decimal into `text` at `at`, moving `at` past it.
fn decimal<const N: usize>(n: u32, divisors: &[u32], text: &mut [u8; N], at: &mut usize) {
    let mut leading = true;
    for &divisor in divisors {
        let digit = n / divisor % 10;
        leading &= digit == 0;
        if !leading {
            text[*at] = b'0' + digit as u8;
            *at += 1;
        }
    }
    text[*at] = b'0' + (n % 10) as u8;
    *at += 1;
}

fn int(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration in whole microseconds, rounded to the nearest.
fn micros(duration: Duration) -> u64 {
    // In 64 bits: a second is a whole number of microseconds, so only the
    // sub-second nanoseconds round.
    let nanos = duration.subsec_nanos();
    let sub = u64::from(nanos / 1000 + u32::from(nanos % 1000 >= 500));
    duration.as_secs().saturating_mul(1_000_000).saturating_add(sub)
}

/// Milliseconds with the shortest decimals that say them exactly, at
/// least one (`12.345`, `1000.5`, `3.0`): how JSON prints the number.
fn json_millis(duration: Duration, out: &mut Vec<u8>) {
    let us = micros(duration);
    int(us / 1000, out);
    out.push(b'.');
    let frac = us % 1000;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let digits = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
    let keep = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..keep]);
}

/// Milliseconds with exactly three decimals (`12.345`, `3.000`).
fn text_millis(duration: Duration, out: &mut Vec<u8>) {
    let us = micros(duration);
    int(us / 1000, out);
    let frac = us % 1000;
    out.extend_from_slice(&[b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    hex_into(bytes, &mut out[start..]);
}

/// A JSON string, quoted, escaped as `serde_json` escapes: `"`, `\`, the
/// short forms `\b \f \n \r \t`, other bytes below 0x20 as `\u00XX`.
fn json_str(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !any_byte(bytes, |w| below(w, 0x20) | equal(w, b'"') | equal(w, b'\\')) {
        // What nearly every value is: nothing to escape.
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    let mut unicode = *b"\\u0000";
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 15)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_plain_opt(value: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Some(value) => json_plain(value, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// `value` between double quotes, as it is.
#[inline]
fn quoted(value: &[u8], out: &mut Vec<u8>) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    out.extend_from_slice(value);
    out.push(b'"');
}

/// A JSON string that needs no escaping: a method (an HTTP token has no
/// `"`, `\` or control character), a name the proxy or its config chose.
fn json_plain(value: &str, out: &mut Vec<u8>) {
    debug_assert!(!value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'), "{value:?} needs escaping");
    quoted(value.as_bytes(), out);
}

/// Whether `word` says yes to any byte of `bytes`, read eight bytes at a
/// time (its result has a byte's high bit set for each yes). The last
/// partial word is padded with `a`, a byte no caller looks for, so a short
/// value is one or two words and no loop over bytes.
fn any_byte(bytes: &[u8], word: impl Fn(u64) -> u64) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let Ok(eight) = <[u8; 8]>::try_from(chunk) else { return true };
        if word(u64::from_le_bytes(eight)) != 0 {
            return true;
        }
    }
    let rest = words.remainder();
    if rest.is_empty() {
        return false;
    }
    let mut eight = [b'a'; 8];
    eight[..rest.len()].copy_from_slice(rest);
    word(u64::from_le_bytes(eight)) != 0
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` below `n` (`n` at most 128) is set in
/// the result when any byte is; zero when none is.
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// Nonzero when any byte of `w` is `b`.
fn equal(w: u64, b: u8) -> u64 {
    below(w ^ (ONES * u64::from(b)), 1)
}

/// Escape `"`, `\` and control characters, so a client cannot forge a
/// line or a field.
fn text_str(value: &str, out: &mut Vec<u8>) {
    let clean = !any_byte(
        value.as_bytes(),
        // At or above 0x7f: the high bit set (0x80 and up), or 0x7f itself.
        |w| below(w, 0x20) | equal(w, b'"') | equal(w, b'\\') | (w & HIGHS) | equal(w, 0x7f),
    );
    if clean {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(f: fn(Duration, &mut Vec<u8>), duration: Duration) -> String {
        let mut out = Vec::new();
        f(duration, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn milliseconds_print_as_json_numbers_and_as_fixed_text() {
        for (nanos, json, text) in [
            (0, "0.0", "0.000"),
            (499, "0.0", "0.000"),
            (500, "0.001", "0.001"),
            (3_000_000, "3.0", "3.000"),
            (12_345_000, "12.345", "12.345"),
            (12_340_000, "12.34", "12.340"),
            (1_000_499_600, "1000.5", "1000.500"),
            (7_000_070_000, "7000.07", "7000.070"),
            // Rounding up carries into the next second.
            (1_999_999_500, "2000.0", "2000.000"),
        ] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(printed(json_millis, duration), json, "{nanos} ns");
            assert_eq!(printed(text_millis, duration), text, "{nanos} ns");
            // What serde_json prints for the same number of milliseconds.
            let number = micros(duration) as f64 / 1e3;
            assert_eq!(serde_json::to_string(&number).expect("json"), json, "{nanos} ns");
        }
    }

    #[test]
    fn strings_escape_as_serde_json_and_as_the_text_format_says() {
        for (value, text) in [
            ("/cart", "/cart"),
            ("/a\"b\\c", "/a\\\"b\\\\c"),
            ("a\nb\r\t\u{1}\u{8}\u{c}\u{1f}", "a\\x0ab\\x0d\\x09\\x01\\x08\\x0c\\x1f"),
            ("\u{7f}é😀", "\\x7fé😀"),
            ("", ""),
            // Eight bytes at a time: clean words, and each kind of escape
            // in a word's first, middle and last byte.
            ("/a/long/clean/path/segment", "/a/long/clean/path/segment"),
            ("/abcdefg\"/abcdef\\", "/abcdefg\\\"/abcdef\\\\"),
            ("/abcdefghij\u{1}klmn/abcdef\u{1f}", "/abcdefghij\\x01klmn/abcdef\\x1f"),
            ("/abcdefghij\u{7f}klmn", "/abcdefghij\\x7fklmn"),
            ("/abcdefghij/é/klmn", "/abcdefghij/é/klmn"),
            (
                "/abcdefghij/ !#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}~",
                "/abcdefghij/ !#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}~",
            ),
        ] {
            let mut out = Vec::new();
            json_str(value, &mut out);
            assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                serde_json::to_string(value).expect("json"),
                "{value:?}"
            );
            let mut out = Vec::new();
            text_str(value, &mut out);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), text, "{value:?}");
        }
    }

    #[test]
    fn client_addresses_print_as_socket_addr_displays_them() {
        for addr in [
            "0.0.0.0:1",
            "1.22.133.4:80",
            "10.0.100.9:999",
            "127.0.0.1:10000",
            "255.255.255.255:65535",
            "[::1]:443",
            "[2001:db8::7]:8080",
        ] {
            let addr: SocketAddr = addr.parse().expect("address");
            let mut out = b"before ".to_vec();
            client(addr, &mut out);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), format!("before {addr}"));
        }
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        let mut out = Vec::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_687_200_123);
        time(t, &mut out);
        out.push(b' ');
        time(t + Duration::from_millis(877), &mut out);
        out.push(b' ');
        time(t + Duration::from_millis(86_400_000), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "2026-11-26T10:00:00.123Z 2026-11-26T10:00:01.000Z 2026-11-27T10:00:00.123Z"
        );
    }
}
