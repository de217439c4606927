//! Wall-clock times as the admin API, the revision history and the access
//! log write them.
//!
//! One small formatter, shared by `control` (which stamps each revision),
//! `admin` (which reports the last reload) and `access_log`, so that none
//! needs another for it. RFC 3339 in UTC with second precision is
//! what operators' tools parse, and it sorts as text.

use std::time::SystemTime;

/// RFC 3339 UTC with second precision (`2026-11-26T10:00:00Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let (date, _) = civil(time);
    format!("{date}Z")
}

/// RFC 3339 UTC with millisecond precision (`2026-11-26T10:00:00.123Z`),
/// for access-log lines, where requests within one second must still sort.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let (date, millis) = civil(time);
    format!("{date}.{millis:03}Z")
}

/// `YYYY-MM-DDTHH:MM:SS` of `time` in UTC, and its milliseconds.
fn civil(time: SystemTime) -> (String, u32) {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}"), since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_687_200);
        assert_eq!(rfc3339(t), "2026-11-26T10:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let later = t + Duration::from_millis(7);
        assert_eq!(rfc3339_millis(later), "2026-11-26T10:00:00.007Z");
    }
}
