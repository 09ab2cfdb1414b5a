//! What the test workers read from their task: the name `good` asks a hostile worker to behave
//! (exit 0 in its first step), so a test can run a good task beside a bad one on the same host;
//! integers in the payload set how far a worker goes, so each limit can be tested obeyed and
//! violated with the same worker.

#![allow(dead_code, reason = "each worker uses only some of these")]

use http_spawn_sdk::{Spec, payload};

/// The task name that asks a hostile worker to behave.
pub const GOOD: &str = "good";

/// Whether this task was asked to behave.
pub fn is_good(spec: &Spec) -> bool {
    spec.name == GOOD
}

/// How far the worker goes: `tame` for the good task, else the non-negative integer field
/// `key` of the payload, else `unbounded`. A field that is not such an integer is an error,
/// which fails the task at start (through `plan`) rather than letting it run unbounded.
pub fn limit(spec: &Spec, key: &str, tame: u64, unbounded: u64) -> Result<u64, String> {
    if is_good(spec) {
        return Ok(tame);
    }
    Ok(number(spec, key)?.unwrap_or(unbounded))
}

/// The non-negative integer field `key` of the payload, if there is one.
pub fn number(spec: &Spec, key: &str) -> Result<Option<u64>, String> {
    match payload::int(spec.payload.as_deref(), key) {
        Ok(None) => Ok(None),
        Ok(Some(n)) => u64::try_from(n)
            .map(Some)
            .map_err(|_| format!("{key} must not be negative")),
        Err(reason) => Err(format!("{key}: {reason}")),
    }
}
