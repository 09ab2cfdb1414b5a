//! How a task's fields are written in a SQL store's columns, the same in SQLite and
//! PostgreSQL: times as nanoseconds since the Unix epoch, statuses, outcomes and log sources by
//! name, and the attempts before the current one as a JSON array.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::StoreError;
use crate::model::{Attempt, LogSource, Outcome, Status, TaskEnd};

pub(super) fn nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    })
}

pub(super) fn time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

pub(super) fn attempt_json(attempt: u32, end: &TaskEnd, at: SystemTime) -> String {
    serde_json::json!({
        "attempt": attempt,
        "status": end.status.as_str(),
        "outcome": end.outcome.as_str(),
        "exit_code": end.exit_code,
        "error": end.error,
        "ended_at": nanos(at),
    })
    .to_string()
}

pub(super) fn source_name(source: LogSource) -> &'static str {
    match source {
        LogSource::Trace => "trace",
        LogSource::Debug => "debug",
        LogSource::Info => "info",
        LogSource::Warn => "warn",
        LogSource::Error => "error",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
    }
}

pub(super) fn source_of(name: &str) -> LogSource {
    match name {
        "trace" => LogSource::Trace,
        "debug" => LogSource::Debug,
        "warn" => LogSource::Warn,
        "error" => LogSource::Error,
        "stdout" => LogSource::Stdout,
        "stderr" => LogSource::Stderr,
        _ => LogSource::Info,
    }
}

pub(super) fn status_of(name: &str) -> Status {
    match name {
        "running" => Status::Running,
        "exited" => Status::Exited,
        "failed" => Status::Failed,
        "killed" => Status::Killed,
        _ => Status::Spawned,
    }
}

pub(super) fn attempts_of(json: &str) -> Vec<Attempt> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            Some(Attempt {
                attempt: u32::try_from(entry["attempt"].as_u64()?).ok()?,
                status: status_of(entry["status"].as_str()?),
                outcome: Outcome::parse(entry["outcome"].as_str()?)?,
                exit_code: entry["exit_code"]
                    .as_i64()
                    .and_then(|code| i32::try_from(code).ok()),
                error: entry["error"].as_str().map(str::to_owned),
                ended_at: time(entry["ended_at"].as_i64()?),
            })
        })
        .collect()
}
