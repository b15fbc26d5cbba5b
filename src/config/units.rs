//! Human units in the config: durations (`"250ms"`, `"10s"`, `"5m"`, `"1h30m"`)
//! and sizes (`"512MiB"`, `"2GiB"`, `"100MB"`). Written by hand because the
//! error text is part of our user interface: it must name what was wrong and
//! what is expected, which general-purpose parsers do not do.

use std::time::Duration;

/// Longest duration accepted: 100 years (deadlines stay far from overflow).
const MAX_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// Parses a duration such as `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"7d"` or a
/// compound `"1h30m"`. A bare `"0"` means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!(
            "invalid duration \"{text}\": it is empty; expected a number with a unit, e.g. \"10s\""
        ));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{text}\": expected a number at \"{rest}\", e.g. \"10s\", \"250ms\", \"5m\""
            ));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| {
            format!(
                "invalid duration \"{text}\": \"{}\" is not a number",
                &rest[..digits]
            )
        })?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit after {number}; expected one of ms, s, m, h, d (e.g. \"{number}s\")"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit \"{other}\"; expected one of ms, s, m, h, d (e.g. \"10s\")"
                ))
            }
        };
        let secs = number * scale;
        if !secs.is_finite() || secs > MAX_SECS || total.as_secs_f64() + secs > MAX_SECS {
            return Err(format!(
                "invalid duration \"{text}\": longer than 100 years"
            ));
        }
        total += Duration::from_secs_f64(secs);
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Parses a size such as `"512MiB"`, `"2GiB"`, `"100MB"`, `"64KiB"` or `"4096"`
/// (bytes). Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal units
/// (kB, MB, GB, TB) powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if digits == 0 {
        return Err(format!(
            "invalid size \"{text}\": expected a number with a unit, e.g. \"512MiB\" or \"2GiB\""
        ));
    }
    let number: f64 = s[..digits].parse().map_err(|_| {
        format!(
            "invalid size \"{text}\": \"{}\" is not a number",
            &s[..digits]
        )
    })?;
    let unit = s[digits..].trim();
    let scale: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "invalid size \"{text}\": unknown unit \"{other}\"; expected one of B, KiB, MiB, GiB, TiB (also written K, M, G, T), kB, MB, GB, TB (e.g. \"512MiB\")"
            ))
        }
    };
    Ok((number * scale).round() as u64)
}

/// Formats bytes the way people read them: `"12.3 MiB"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a duration compactly: `"850ms"`, `"12s"`, `"3m04s"`, `"2h05m"`, `"3d04h"`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    if secs < 60 {
        return format!("{secs}s");
    }
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    if secs < 86_400 {
        return format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60);
    }
    format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_errors_say_what_is_expected() {
        assert_eq!(
            parse_duration("10 sex").unwrap_err(),
            "invalid duration \"10 sex\": unknown unit \"sex\"; expected one of ms, s, m, h, d (e.g. \"10s\")"
        );
        assert_eq!(
            parse_duration("10").unwrap_err(),
            "invalid duration \"10\": missing unit after 10; expected one of ms, s, m, h, d (e.g. \"10s\")"
        );
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("10000000000000000000s")
            .unwrap_err()
            .contains("100 years"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(
            parse_size("12 parsecs").unwrap_err(),
            "invalid size \"12 parsecs\": unknown unit \"parsecs\"; expected one of B, KiB, MiB, GiB, TiB (also written K, M, G, T), kB, MB, GB, TB (e.g. \"512MiB\")"
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(200 * 1024 * 1024), "200.0 MiB");
        assert_eq!(format_duration(Duration::from_secs(184)), "3m04s");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
    }
}
