//! The raw look at HTTP/1 request heads, for the one framing error hyper
//! resolves without telling: `Content-Length` together with
//! `Transfer-Encoding`.

/// A look at the header names of HTTP/1 request heads read while no request
/// is in flight, for the one thing hyper resolves without telling: a head
/// with both `Content-Length` and `Transfer-Encoding`. hyper's framing is
/// the safety (it drops the length and closes the connection after); this
/// scan only turns such a request into the 400 the spec asks for. It checks
/// line starts only, and a header name split across two reads goes unseen,
/// which costs nothing but the 400.
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    in_head: bool,
    at_line_start: bool,
    saw_length: bool,
    saw_chunked: bool,
}

impl HeadScan {
    /// Scan `bytes`, which continue the current head or start a new one.
    /// Returns true when a head ended that framed its body both ways.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.in_head {
            *self = HeadScan { in_head: true, at_line_start: true, ..HeadScan::default() };
        }
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if self.at_line_start {
                if rest.starts_with(b"\r\n") || rest[0] == b'\n' {
                    let conflict = self.saw_length && self.saw_chunked;
                    *self = HeadScan::default();
                    return conflict;
                }
                // Most lines start with neither letter: one byte decides.
                match rest[0] {
                    b'c' | b'C' => self.saw_length |= starts_with_ignore_case(rest, b"content-length:"),
                    b't' | b'T' => self.saw_chunked |= starts_with_ignore_case(rest, b"transfer-encoding:"),
                    _ => {}
                }
            }
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    at += end + 1;
                    self.at_line_start = true;
                }
                None => {
                    self.at_line_start = false;
                    break;
                }
            }
        }
        false
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
