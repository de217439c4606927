//! The checks every section uses, and where an error points.
//!
//! [`Cx`] is the file being validated: every error it makes carries the
//! file's path and the `line:col` of the offending value, counted in
//! characters as an editor shows them. The value checks (names, header and
//! cookie names, addresses, file paths, bounded integers, durations) word
//! their errors the same way for every section.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::super::raw::RawDuration;
use crate::config::ConfigError;

/// What every check returns.
pub(super) type Result<T> = std::result::Result<T, ConfigError>;

/// Largest accepted duration. Nothing in a proxy needs more than a year, and
/// the cap keeps `Instant + duration` from overflowing anywhere downstream.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// What an operator should write when a duration is wrong.
pub(super) const DURATION_HINT: &str = "write it like \"250ms\", \"30s\" or \"5m\"";

/// The file being validated: everything an error needs to say where it is.
pub(super) struct Cx<'a> {
    /// The file's path, for errors and relative paths.
    pub(super) path: &'a Path,
    /// Its text, for positions.
    pub(super) text: &'a str,
}

impl Cx<'_> {
    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            position: Some(line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    /// A syntax, type or unknown-key error from the `toml` crate, reworded
    /// where its message talks about Rust types rather than TOML ones.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let key = span.clone().and_then(|s| self.text.get(s));
        ConfigError {
            path: self.path.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
            message: tidy_toml_message(e.message(), key),
        }
    }

    pub(super) fn check_name(&self, name: &Spanned<String>, kind: &str) -> Result<()> {
        let n = name.get_ref();
        if n.is_empty() {
            return Err(
                self.err(name.span(), format!("{kind} name is empty; use ASCII letters, digits, '-', '_' or '.'"))
            );
        }
        if !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            // Names end up in admin URL paths and metric labels.
            return Err(self.err(
                name.span(),
                format!("{kind} name \"{n}\" may only contain ASCII letters, digits, '-', '_' and '.'"),
            ));
        }
        Ok(())
    }

    pub(super) fn header_name(&self, route: &str, what: &str, v: &Spanned<String>) -> Result<HeaderName> {
        HeaderName::from_bytes(v.get_ref().to_ascii_lowercase().as_bytes()).map_err(|_| {
            self.err(
                v.span(),
                format!("route \"{route}\": {what} header \"{}\" is not a valid header name", v.get_ref()),
            )
        })
    }

    pub(super) fn cookie_name(&self, route: &str, what: &str, v: &Spanned<String>) -> Result<String> {
        let n = v.get_ref();
        if n.is_empty() || !n.bytes().all(is_tchar) {
            return Err(self.err(
                v.span(),
                format!("route \"{route}\": {what} cookie \"{n}\" is not a valid cookie name; use e.g. letters, digits, '-' and '_'"),
            ));
        }
        Ok(n.clone())
    }

    pub(super) fn socket_addr(&self, v: &Spanned<String>, key: &str) -> Result<SocketAddr> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                format!(
                    "{key}: \"{}\" is not an ip:port address; write e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"",
                    v.get_ref()
                ),
            )
        })
    }

    pub(super) fn file_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf> {
        if v.get_ref().is_empty() {
            return Err(self.err(v.span(), format!("{key} is empty; give a file path or remove the key")));
        }
        let p = Path::new(v.get_ref());
        // Relative to the config file, not to wherever the proxy was started.
        Ok(match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        })
    }

    pub(super) fn int_in(&self, v: &Spanned<i64>, what: &str, min: i64, max: i64) -> Result<i64> {
        let n = *v.get_ref();
        if n < min {
            return Err(self.err(v.span(), format!("{what} is {n}; it must be at least {min}")));
        }
        if n > max {
            return Err(self.err(v.span(), format!("{what} is {n}; it must be at most {max}")));
        }
        Ok(n)
    }

    pub(super) fn duration_or(
        &self,
        v: Option<&Spanned<RawDuration>>,
        what: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Result<Duration> {
        match v {
            None => Ok(default),
            Some(v) => self.duration(v, what, zero_ok),
        }
    }

    pub(super) fn duration(&self, v: &Spanned<RawDuration>, what: &str, zero_ok: bool) -> Result<Duration> {
        let text = &v.get_ref().0;
        let d = humantime::parse_duration(text).map_err(|e| {
            let problem = match e {
                humantime::DurationError::Empty => "is empty".to_owned(),
                humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                    format!("\"{text}\" has no unit")
                }
                humantime::DurationError::UnknownUnit { unit, .. } => {
                    format!("\"{text}\" has an unknown unit \"{unit}\"")
                }
                humantime::DurationError::NumberOverflow => format!("\"{text}\" is too large"),
                _ => format!("\"{text}\" is not a duration"),
            };
            self.err(v.span(), format!("{what}: {problem}; {DURATION_HINT}"))
        })?;
        if d.is_zero() && !zero_ok {
            return Err(self.err(v.span(), format!("{what} must be greater than zero; {DURATION_HINT}")));
        }
        if d > MAX_DURATION {
            return Err(self.err(v.span(), format!("{what}: \"{text}\" is too long; the most is 365 days")));
        }
        Ok(d)
    }
}

/// 1-based `(line, column)` of `byte_offset` in `text`, the column counted in
/// characters (what an editor shows), not bytes. Offsets past the end, or
/// inside a multi-byte character, are clamped to the nearest position before.
pub(super) fn line_col(text: &str, byte_offset: usize) -> (usize, usize) {
    let mut offset = byte_offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A lowercase DNS-style name or IPv4 address: dot-separated non-empty labels
/// of letters, digits, `-` and `_`.
pub(super) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// RFC 9110 `tchar`, which is what a cookie name (RFC 6265 `token`) is made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`.
pub(super) fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Callers range-check first; saturate rather than panic if they did not.
pub(super) fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The `toml` crate's messages speak serde ("expected i64", "expected struct
/// RawPool"); say it in TOML terms, on one line.
fn tidy_toml_message(message: &str, key: Option<&str>) -> String {
    let mut m = message
        .trim()
        .replace('\n', "; ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(i) = m.find("expected struct ") {
        let name_start = i + "expected struct ".len();
        let name_len =
            m[name_start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(m.len() - name_start);
        m.replace_range(i + "expected ".len()..name_start + name_len, "a table");
    }
    if m == "duplicate key" {
        if let Some(key) = key {
            m = format!("duplicate key `{}`; each key may appear only once in a table", key.trim());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use std::time::Duration;

    // ----- durations ----------------------------------------------------------

    #[test]
    fn durations_must_parse() {
        assert_err(
            &with_server("[server]\nrequest_timeout = \"3x\"\n"),
            "server.request_timeout: \"3x\" has an unknown unit \"x\"; write it like \"250ms\"",
            (2, 19),
        );
        assert_err(&with_server("[server]\nconnect_timeout = \"\"\n"), "server.connect_timeout: is empty", (2, 19));
        assert_err(&with_server("[server]\nidle_timeout = \"30\"\n"), "\"30\" has no unit", (2, 16));
        assert_err(
            &with_server("[server]\ndrain_timeout = 30\n"),
            "expected a duration string like \"250ms\"",
            (2, 17),
        );
        assert_err(
            &with_server("[server]\nidle_timeout = \"400days\"\n"),
            "server.idle_timeout: \"400days\" is too long",
            (2, 16),
        );
    }

    #[test]
    fn durations_may_be_zero_only_for_shutdown_delay() {
        assert_err(
            &with_server("[server]\nrequest_timeout = \"0s\"\n"),
            "server.request_timeout must be greater than zero",
            (2, 19),
        );
        let config = parse_ok(&with_server("[server]\nshutdown_delay = \"0s\"\n"));
        assert_eq!(config.server.shutdown_delay, Duration::ZERO);
    }
}
