//! How the API writes a point in time: RFC 3339 in UTC with milliseconds, everywhere.

use std::time::SystemTime;

use serde::Serializer;

/// `at` as the API writes it, e.g. `2026-11-24T09:23:04.695Z`.
pub fn format(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Serialises a time as [`format`] writes it.
pub fn rfc3339<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// Serialises an optional time as [`format`] writes it, or `null`.
pub fn rfc3339_opt<S: Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// An RFC 3339 date and time with any offset (`2026-12-24T18:00:00Z`,
/// `2026-12-24T19:00:00+01:00`), as a system time; none if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let at = text.parse::<jiff::Timestamp>().ok()?;
    Some(SystemTime::from(at))
}
