//! Small helpers shared across modules: wall-clock time for records and
//! timestamps for people.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, for records (never for decisions:
/// decision logic takes `tokio::time::Instant` from its caller).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T06:10:00.123Z`.
pub fn format_ts(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms}ms"),
    }
}
