//! A task's log lines: what its guest logged through the host, and what it printed.

use std::time::SystemTime;

use serde::Serialize;

/// Where a line came from: a `log` call at its level, or the guest's stdout or stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Stdout,
    Stderr,
}

/// One captured line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    #[serde(serialize_with = "super::time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    pub source: LogSource,
    pub message: String,
}

/// A task's captured log as the store keeps it, apart from its record: the lines kept under
/// the cap, and how many bytes the cap discarded.
#[derive(Debug, Clone, Default)]
pub struct TaskLogs {
    pub lines: Vec<LogLine>,
    pub dropped_bytes: u64,
}
