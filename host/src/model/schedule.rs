//! A schedule: a cron expression in a time zone, and the task each of its ticks submits.
//!
//! Cron expressions follow POSIX/Vixie cron (five fields, minute first; day of week 0–7 with
//! 0 and 7 Sunday; a restricted day of month and day of week match either), with an optional
//! sixth field of seconds in front, and `@hourly`-style nicknames. Ticks are computed in the
//! schedule's time zone with the Open Cron Pattern Specification's rules for its clock changes:
//! a fixed time that falls in a gap (spring forward) fires once, at the first time after it;
//! one in an overlap (fall back) fires once, at its first pass. Parsing is croner's.

use std::time::SystemTime;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// What a tick does when the task of the tick before still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Nothing: the tick is skipped.
    Skip,
    /// It submits its task all the same.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "skip" => Some(Self::Skip),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }
}

/// What becomes of ticks missed while no host ran the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The latest tick missed fires once, as soon as a host runs again; the others are skipped.
    Latest,
    /// Every tick missed is skipped.
    None,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "latest" => Some(Self::Latest),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct CronTab {
    cron: Cron,
    zone: TimeZone,
}

/// Why a cron expression or a time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron {expression:?} is not a cron expression: {reason}")]
    Cron { expression: String, reason: String },
    #[error("cron {0:?} never fires")]
    Never(String),
    #[error(
        "timezone {0:?} is not a time zone of the tz database, such as \"Europe/Berlin\" or \"UTC\""
    )]
    Zone(String),
}

impl CronTab {
    /// `expression` read in the time zone named `zone` (an IANA name, such as
    /// `Europe/Berlin`, or `UTC`).
    pub fn parse(expression: &str, zone: &str) -> Result<Self, CronError> {
        let zone = TimeZone::get(zone).map_err(|_| CronError::Zone(zone.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| CronError::Cron {
                expression: expression.to_owned(),
                reason: error.to_string(),
            })?;
        let tab = Self { cron, zone };
        if tab.next_after(SystemTime::now()).is_none() {
            return Err(CronError::Never(expression.to_owned()));
        }
        Ok(tab)
    }

    /// The first tick strictly after `after`, if there is one.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let start = Timestamp::try_from(after).ok()?.to_zoned(self.zone.clone());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(SystemTime::from(next.timestamp()))
    }

    /// The next `n` ticks after `after`.
    pub fn upcoming(&self, after: SystemTime, n: usize) -> Vec<SystemTime> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = after;
        while ticks.len() < n
            && let Some(next) = self.next_after(at)
        {
            ticks.push(next);
            at = next;
        }
        ticks
    }

    /// The latest tick in `(after, now]`, if any: what is due now, however many passed.
    pub fn due(&self, after: SystemTime, now: SystemTime) -> Option<SystemTime> {
        let end = Timestamp::try_from(now).ok()?.to_zoned(self.zone.clone());
        let latest = self.cron.find_previous_occurrence(&end, true).ok()?;
        let latest = SystemTime::from(latest.timestamp());
        (latest > after).then_some(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        super::super::time::parse_rfc3339(text).expect("a time")
    }

    fn ticks(expression: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        CronTab::parse(expression, zone)
            .expect("a cron")
            .upcoming(at(after), n)
            .into_iter()
            .map(|tick| humantime::format_rfc3339(tick).to_string())
            .collect()
    }

    #[test]
    fn five_fields_are_posix_cron_and_six_start_with_seconds() {
        assert_eq!(
            ticks("*/5 * * * *", "UTC", "2026-12-07T10:03:00Z", 3),
            [
                "2026-12-07T10:05:00Z",
                "2026-12-07T10:10:00Z",
                "2026-12-07T10:15:00Z"
            ]
        );
        // 1-5 is Monday to Friday, as in crontab(5): 2026-12-11 is a Friday.
        assert_eq!(
            ticks("0 9 * * 1-5", "UTC", "2026-12-11T10:00:00Z", 1),
            ["2026-12-14T09:00:00Z"]
        );
        assert_eq!(
            ticks("*/2 * * * * *", "UTC", "2026-12-07T10:00:00Z", 2),
            ["2026-12-07T10:00:02Z", "2026-12-07T10:00:04Z"]
        );
        assert_eq!(
            ticks("@daily", "Europe/Berlin", "2026-12-07T10:00:00Z", 1),
            ["2026-12-07T23:00:00Z"]
        );
    }

    /// Berlin springs forward at 02:00 on 2026-03-29 and falls back at 03:00 on 2026-10-25.
    #[test]
    fn clock_changes_fire_a_daily_tick_once() {
        // 02:30 does not exist that day: it fires once, at 03:00 local (01:00 UTC).
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // 02:30 happens twice that day: it fires once, at the first (00:30 UTC).
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_their_reason() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "nonsense",
            "*/0 * * * *",
        ] {
            assert!(
                matches!(CronTab::parse(bad, "UTC"), Err(CronError::Cron { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            CronTab::parse("* * * * *", "Mars/Olympus").map(|_| ()),
            Err(CronError::Zone("Mars/Olympus".into()))
        );
        assert!(matches!(
            CronTab::parse("0 0 30 2 *", "UTC"),
            Err(CronError::Never(_) | CronError::Cron { .. })
        ));
    }

    #[test]
    fn what_is_due_is_the_latest_tick_passed() {
        let tab = CronTab::parse("* * * * *", "UTC").expect("a cron");
        let after = at("2026-12-07T10:00:30Z");
        assert_eq!(tab.due(after, at("2026-12-07T10:00:59Z")), None);
        assert_eq!(
            tab.due(after, at("2026-12-07T10:01:00Z")),
            Some(at("2026-12-07T10:01:00Z"))
        );
        // Hours missed: the latest.
        assert_eq!(
            tab.due(after, at("2026-12-07T13:07:10Z")),
            Some(at("2026-12-07T13:07:00Z"))
        );
        // Two days of an hourly schedule missed: the latest, once.
        let hourly = CronTab::parse("0 * * * *", "UTC").expect("a cron");
        let now = at("2026-12-09T10:30:00Z");
        let latest = hourly.due(at("2026-12-07T10:30:00Z"), now);
        assert_eq!(latest, Some(at("2026-12-09T10:00:00Z")));
        assert_eq!(hourly.due(at("2026-12-09T10:00:00Z"), now), None);
    }
}
