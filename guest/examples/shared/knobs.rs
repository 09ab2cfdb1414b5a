//! What the test workers read from their task: the name `good` asks a hostile worker to behave
//! (sleep one short step and exit 0), so a test can run a good task beside a bad one on the same
//! host; numbers in the payload set how far a worker goes, so each limit can be tested obeyed
//! and violated with the same worker.

#![allow(dead_code, reason = "each worker uses only some of these")]

use std::sync::atomic::{AtomicBool, Ordering};

/// The task name that asks a hostile worker to behave.
pub const GOOD: &str = "good";

static GOOD_TASK: AtomicBool = AtomicBool::new(false);

/// Remembers, at `start`, whether this task is the good one.
pub fn remember(name: &str) {
    GOOD_TASK.store(name == GOOD, Ordering::Relaxed);
}

/// Whether this task was asked to behave.
pub fn is_good() -> bool {
    GOOD_TASK.load(Ordering::Relaxed)
}

/// The unsigned integer field `key` of a flat JSON payload such as `{"mib": 4}`. Parsed by hand:
/// a JSON library would grow every instance of these tiny workers.
pub fn number(payload: Option<&str>, key: &str) -> Option<u64> {
    let quoted = format!("\"{key}\"");
    let payload = payload?;
    let rest = payload[payload.find(&quoted)? + quoted.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
