//! How the judge writes figures for people: shares as percentages that
//! never round a nonzero share to zero, counts with thousands separators,
//! excesses in percentage points.

use std::time::Duration;

/// A share as a percentage: `4.8%`, `0.1%`, `0.05%`, `0%`.
pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 {
        "0%".to_string()
    } else if p >= 10.0 {
        format!("{p:.0}%")
    } else if p >= 0.1 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A count with thousands separators: `2,790`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share difference in percentage points, one decimal: `2.6`.
pub(crate) fn points(excess: f64) -> String {
    let text = format!("{:.1}", excess * 100.0);
    if text == "-0.0" {
        "0.0".to_string()
    } else {
        text
    }
}

/// A confidence as a percentage without trailing zeros: `99%`, `99.9%`.
pub(crate) fn confidence(c: f64) -> String {
    let text = format!("{:.3}", c * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// A span of time, to the second (`14s`, `2m 5s`) or to the millisecond
/// under a second.
pub(crate) fn span(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

/// A latency to two or three significant figures: `7.8ms`, `300ms`, `1.2s`.
pub(crate) fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1_000.0;
    if ms < 1.0 {
        format!("{}µs", d.as_micros())
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(percent(0.048), "4.8%");
        assert_eq!(percent(0.001), "0.1%");
        assert_eq!(percent(0.0005), "0.05%");
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(count(2790), "2,790");
        assert_eq!(count(310), "310");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(0), "0");
        assert_eq!(points(0.026), "2.6");
        assert_eq!(points(0.01), "1.0");
        assert_eq!(points(-0.0001), "0.0");
        assert_eq!(confidence(0.99), "99%");
        assert_eq!(confidence(0.999), "99.9%");
        assert_eq!(span(Duration::from_millis(14_700)), "14s");
        assert_eq!(span(Duration::from_millis(250)), "250ms");
        assert_eq!(latency(Duration::from_micros(7_800)), "7.8ms");
        assert_eq!(latency(Duration::from_millis(300)), "300ms");
        assert_eq!(latency(Duration::from_micros(450)), "450µs");
        assert_eq!(latency(Duration::from_millis(1_200)), "1.20s");
    }
}
