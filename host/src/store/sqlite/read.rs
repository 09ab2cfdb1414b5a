//! Reading the SQLite store's rows back as the host's records.

use rusqlite::Row;

use super::super::columns::{attempts_of, status_of, time};
use crate::model::{JsonText, OnHostLoss, Outcome, Pid, TaskRecord, TaskSpec};

pub(super) const RECORD_COLUMNS: &str =
    "boot, seq, spawned_at, name, worker, version, status, duration,
    step, steps, exit_code, outcome, error, started_at, ended_at, fuel, attempt, attempts,
    logs_dropped_bytes, parent_boot, parent_seq, result, run_at, priority, retry_of_boot,
    retry_of_seq, schedule, schedule_tick, concurrency_key";

/// How many columns [`RECORD_COLUMNS`] names: where the columns selected after them start.
pub(super) const RECORD_COLUMN_COUNT: usize = 29;

/// What a task needs to run again, as [`spec_of`] reads it.
pub(super) const SPEC_COLUMNS: &str =
    "module_sha256, payload, deadline_secs, max_attempts, on_host_loss, ready_at, priority";

pub(super) fn record_of(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let boot: i64 = row.get(0)?;
    let seq: i64 = row.get(1)?;
    let pid = Pid::new(boot as u32, seq as u64);
    let worker: String = row.get(4)?;
    let version: String = row.get(5)?;
    let mut record =
        TaskRecord::spawned(pid, row.get(3)?, row.get(7)?, worker.into(), version.into());
    record.spawned_at = time(row.get(2)?);
    record.status = status_of(&row.get::<_, String>(6)?);
    record.step = row.get(8)?;
    record.steps = row.get(9)?;
    record.exit_code = row.get(10)?;
    record.outcome = row
        .get::<_, Option<String>>(11)?
        .as_deref()
        .and_then(Outcome::parse);
    record.error = row.get(12)?;
    record.started_at = row.get::<_, Option<i64>>(13)?.map(time);
    record.ended_at = row.get::<_, Option<i64>>(14)?.map(time);
    record.fuel_consumed = row.get::<_, i64>(15)? as u64;
    record.attempt = row.get(16)?;
    record.attempts = attempts_of(&row.get::<_, String>(17)?);
    record.logs_dropped_bytes = row.get::<_, i64>(18)? as u64;
    record.parent = match (
        row.get::<_, Option<i64>>(19)?,
        row.get::<_, Option<i64>>(20)?,
    ) {
        (Some(boot), Some(seq)) => Some(Pid::new(boot as u32, seq as u64)),
        _ => None,
    };
    // The writer checked it as it came; a row that does not hold JSON (written by hand) reads
    // as no result rather than as a record that cannot be read.
    record.result = row
        .get::<_, Option<String>>(21)?
        .and_then(|text| JsonText::parse(text).ok());
    record.run_at = row.get::<_, Option<i64>>(22)?.map(time);
    record.priority = row.get(23)?;
    record.retry_of = match (
        row.get::<_, Option<i64>>(24)?,
        row.get::<_, Option<i64>>(25)?,
    ) {
        (Some(boot), Some(seq)) => Some(Pid::new(boot as u32, seq as u64)),
        _ => None,
    };
    record.schedule = row.get(26)?;
    record.schedule_tick = row.get::<_, Option<i64>>(27)?.map(time);
    record.concurrency_key = row.get(28)?;
    Ok(record)
}

pub(super) fn spec_of(row: &Row<'_>, offset: usize) -> rusqlite::Result<TaskSpec> {
    Ok(TaskSpec {
        module_sha256: row.get(offset)?,
        payload: row.get(offset + 1)?,
        deadline_secs: row.get(offset + 2)?,
        max_attempts: row.get(offset + 3)?,
        on_host_loss: OnHostLoss::parse(&row.get::<_, String>(offset + 4)?)
            .unwrap_or(OnHostLoss::Restart),
        ready_at: row.get::<_, Option<i64>>(offset + 5)?.map(time),
        priority: row.get(offset + 6)?,
    })
}
