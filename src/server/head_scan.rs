//! The raw look at HTTP/1 request heads, for the one framing error hyper
//! resolves without telling: `Content-Length` together with
//! `Transfer-Encoding`.

/// A look at the header names of HTTP/1 request heads read while no request
/// is in flight, for the one thing hyper resolves without telling: a head
/// with both `Content-Length` and `Transfer-Encoding`. hyper's framing is
/// the safety (it drops the length and closes the connection after); this
/// scan only turns such a request into the 400 the spec asks for. It keeps
/// the first bytes of the current line, enough for either name, so a name
/// or a blank line split across two reads is seen as if it came in one.
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    in_head: bool,
    /// The current line's first bytes, as many as a name needs.
    line: [u8; LINE_START],
    /// How many of them are in `line`; [`LINE_START`] once the line's start
    /// is judged, while the rest of the line passes.
    line_len: usize,
    saw_length: bool,
    saw_chunked: bool,
}

/// The longest name looked for, with its colon.
const LINE_START: usize = b"transfer-encoding:".len();

impl HeadScan {
    /// Scan `bytes`, which continue the current head or start a new one.
    /// Returns true when a head ended that framed its body both ways; the
    /// bytes after a head's end are not looked at.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.in_head {
            *self = HeadScan { in_head: true, ..HeadScan::default() };
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.line_len == LINE_START {
                // The line's start is judged: skip to its end.
                match memchr::memchr(b'\n', rest) {
                    Some(end) => {
                        rest = &rest[end + 1..];
                        self.line_len = 0;
                    }
                    None => return false,
                }
                continue;
            }
            // Collect the line's first bytes, up to its end.
            let room = LINE_START - self.line_len;
            let window = &rest[..rest.len().min(room)];
            let (take, ended) = match memchr::memchr(b'\n', window) {
                Some(end) => (end, true),
                None => (window.len(), false),
            };
            self.line[self.line_len..self.line_len + take].copy_from_slice(&window[..take]);
            self.line_len += take;
            rest = &rest[take + usize::from(ended)..];
            let start = &self.line[..self.line_len];
            if ended && (start.is_empty() || start == b"\r") {
                let conflict = self.saw_length && self.saw_chunked;
                *self = HeadScan::default();
                return conflict;
            }
            if ended || self.line_len == LINE_START {
                self.saw_length |= starts_with_ignore_case(start, b"content-length:");
                self.saw_chunked |= starts_with_ignore_case(start, b"transfer-encoding:");
                self.line_len = if ended { 0 } else { LINE_START };
            }
        }
        false
    }

    /// Whether a head has begun and not ended.
    pub(super) fn in_head(&self) -> bool {
        self.in_head
    }

    /// Bytes arrived that are not a request head (a body, or HTTP/2): the
    /// next head starts afresh.
    pub(super) fn leave_head(&mut self) {
        self.in_head = false;
    }
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    #[test]
    fn a_head_with_both_framings_is_flagged() {
        let mut scan = HeadScan::default();
        assert!(
            scan.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello")
        );
        let mut scan = HeadScan::default();
        assert!(scan.feed(b"POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length: 5\r\n\r\n"));
    }

    #[test]
    fn ordinary_heads_are_not_flagged() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nTransfer-Encoding: x\r\n"));
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn a_head_spread_over_reads_is_followed() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n"));
        assert!(!scan.feed(b"Transfer-Encoding: chunked\r\n"));
        assert!(scan.feed(b"\r\n0\r\n\r\n"));
        // The next head starts clean.
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }
}
