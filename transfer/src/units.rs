//! How transit writes quantities for people: one convention for the
//! progress bar, the human summary ([`crate::report::Summary::human`]) and
//! the `transit bench` table.
//!
//! * Sizes and rates are binary (KiB = 1024 bytes, MiB, GiB, TiB, ...)
//!   with three significant digits: `1.00 GiB`, `14.2 MiB/s`, `512 KiB`.
//!   Values from 1000 to 1023 of a unit keep their four digits (`1010 MiB`)
//!   rather than turn into `0.99 GiB`.
//! * A size under 1 KiB is a whole number of bytes: `17 B`.
//! * A rate is never shown as zero unless it is zero: a slow one is scaled
//!   down to MiB/s, KiB/s or B/s (`2.00 MiB/s`, `3.00 B/s`, `0.500 B/s`).
//! * Seconds have three significant digits, at most six decimals:
//!   `0.710 s`, `2.07 s`, `12.3 s`, `125 s`, `0.000150 s`.
//!
//! Machine output (`--json`) carries plain numbers instead, whose field
//! names say the unit (`*_bytes`, `*_bytes_per_second`, `*_seconds`).

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `v` with three significant digits (at most `max_decimals` decimals).
fn significant(v: f64, max_decimals: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    // (A value that rounds to 0 gets the most decimals: log10 is -inf.)
    let decimals = |v: f64| {
        2i32.saturating_sub(v.abs().log10().floor() as i32)
            .clamp(0, max_decimals) as usize
    };
    let d = decimals(v);
    let s = format!("{v:.d$}");
    // Rounding may carry into the next power of ten (9.996 -> "10.00"):
    // the rounded value says how many decimals keep three digits ("10.0").
    let rounded: f64 = s.parse().unwrap_or(v);
    match decimals(rounded) {
        r if r < d => format!("{v:.r$}"),
        _ => s,
    }
}

/// `v` bytes scaled to a binary unit: the value and the unit's index.
fn scale(mut v: f64) -> (f64, usize) {
    let mut u = 0;
    // 1023.5 and up would print as "1024": the next unit reads better.
    while v >= 1023.5 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    (v, u)
}

/// A size for people: `17 B`, `1.50 MiB`, `1.00 GiB`, `512 KiB`.
pub fn size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let (v, u) = scale(bytes as f64);
    format!("{} {}", significant(v, 2), UNITS[u])
}

/// A rate for people, from bytes per second: `1.41 GiB/s`, `2.00 MiB/s`,
/// `3.00 B/s`; `0 B/s` only for no bytes at all (a negative or
/// non-finite input counts as none).
pub fn rate(bytes_per_second: f64) -> String {
    let b = if bytes_per_second.is_finite() && bytes_per_second > 0.0 {
        bytes_per_second
    } else {
        return "0 B/s".into();
    };
    let (v, u) = scale(b);
    // Below 1 B/s the decimals go on until three digits show.
    format!("{} {}/s", significant(v, 9), UNITS[u])
}

/// Seconds for people: `0.710 s`, `2.07 s`, `12.3 s`, `125 s`,
/// `0.000150 s`.
pub fn seconds(s: f64) -> String {
    if !(s.is_finite() && s > 0.0) {
        return "0 s".into();
    }
    format!("{} s", significant(s, 6))
}

/// A time left, for the progress bar: `--` while unknown (no rate yet, or
/// none), else `5s`, `2m05s`, `1h02m`.
pub fn eta(left: Option<f64>) -> String {
    let Some(s) = left.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "--".into();
    };
    let s = s.ceil() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(17), "17 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.00 KiB");
        assert_eq!(size(3 << 19), "1.50 MiB");
        assert_eq!(size(1 << 30), "1.00 GiB");
        assert_eq!(size(512 << 10), "512 KiB");
        assert_eq!(size(12_345_678), "11.8 MiB");
        assert_eq!(size(1010 << 20), "1010 MiB");
        // Rounding carries into the next unit, not to "1024 MiB".
        assert_eq!(size((1 << 30) - 1), "1.00 GiB");
        assert_eq!(size(10_235), "10.0 KiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_scale_down_and_never_round_to_zero() {
        assert_eq!(rate(1.41 * (1u64 << 30) as f64), "1.41 GiB/s");
        // The case of the issue: a 2 MB/s stream said "0.00 GB/s".
        assert_eq!(rate(2_000_000.0), "1.91 MiB/s");
        assert_eq!(rate(440.0 * (1 << 20) as f64), "440 MiB/s");
        assert_eq!(rate(3.0 * 1024.0), "3.00 KiB/s");
        assert_eq!(rate(3.0), "3.00 B/s");
        assert_eq!(rate(512.0), "512 B/s");
        assert_eq!(rate(0.5), "0.500 B/s");
        assert_eq!(rate(0.001), "0.00100 B/s");
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(-1.0), "0 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        for r in [1e-6, 0.004, 0.9, 1.0, 999.0, 5e5, 7e9, 3e12] {
            let s = rate(r);
            let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
            assert!(digits.trim_start_matches('0').len() >= 3, "{r}: {s}");
            assert!(s.chars().any(|c| ('1'..='9').contains(&c)), "{r}: {s}");
        }
    }

    #[test]
    fn seconds_have_three_significant_digits() {
        assert_eq!(seconds(0.71), "0.710 s");
        assert_eq!(seconds(2.0666), "2.07 s");
        assert_eq!(seconds(9.999), "10.0 s");
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(seconds(125.4), "125 s");
        assert_eq!(seconds(0.0031), "0.00310 s");
        assert_eq!(seconds(0.00015), "0.000150 s");
        assert_eq!(seconds(1e-9), "0.000000 s");
        assert_eq!(seconds(0.0), "0 s");
    }

    #[test]
    fn an_unknown_time_left_is_dashes() {
        assert_eq!(eta(None), "--");
        assert_eq!(eta(Some(f64::INFINITY)), "--");
        assert_eq!(eta(Some(0.0)), "0s");
        assert_eq!(eta(Some(4.2)), "5s");
        assert_eq!(eta(Some(125.0)), "2m05s");
        assert_eq!(eta(Some(3720.0)), "1h02m");
    }
}
