//! Retrying ended tasks: a new task from an ended task's stored submission.
//!
//! A retry is a new task, with a pid of its own and `retry_of` naming the task it runs again:
//! the same name, worker, duration, payload, deadline, restart policy, loss policy and
//! priority, on the worker's current version (a fix deployed after a failure is what a retry
//! runs). It starts now, whatever `run_at` the task had.
//!
//! A retry is idempotent: each ended task is retried at most once per `--idempotency-ttl`, as
//! if the retry carried the key `retry of <pid>` (no client's key can be that: keys are
//! visible ASCII, with no spaces). Asking again answers the first retry's pid and starts
//! nothing, so a bulk retry sent twice runs nothing twice. To run a task a third time, retry
//! its retry. The task's own `Idempotency-Key`, if it had one, still names the task itself.

use std::time::SystemTime;

use super::{Accepting, Host, SpawnError};
use crate::model::{NewTask, Pid, RestartPolicy, Status, TaskRecord, TaskSpec};
use crate::runtime::Digest;
use crate::store::{IdempotencyKey, ListQuery, StoreError, blocking};

/// Why a task could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no task with pid {0}")]
    NotFound(Pid),
    #[error("task {pid} has not ended ({status}): only an ended task can be retried")]
    NotEnded { pid: Pid, status: &'static str },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

impl From<StoreError> for RetryError {
    fn from(error: StoreError) -> Self {
        Self::Spawn(SpawnError::Store(error))
    }
}

/// Which ended tasks a bulk retry runs again: those matching every filter given, newest
/// first, at most `limit`.
#[derive(Debug, Clone)]
pub struct RetryFilter {
    /// `failed` (the default when neither this nor `outcome` is given), `killed` or `exited`.
    pub status: Option<Status>,
    pub outcome: Option<crate::model::Outcome>,
    pub worker: Option<String>,
    pub name: Option<String>,
    /// Only tasks that ended after this.
    pub ended_after: Option<SystemTime>,
    pub limit: usize,
}

/// The most tasks one bulk retry may run again.
pub const MAX_BULK_RETRY: usize = 10_000;

/// Tasks read per page while a bulk retry looks for the ones it matches.
const PAGE: usize = 500;

impl Host {
    /// Starts a new task from ended task `pid`'s stored submission (see the module's comment);
    /// the new task's acceptance, to be waited for as a submission's is.
    pub async fn retry(&self, pid: Pid) -> Result<Accepting, RetryError> {
        let store = &self.store;
        let (record, spec) =
            blocking(|| store.submission(pid))?.ok_or(RetryError::NotFound(pid))?;
        if !record.status.is_terminal() {
            return Err(RetryError::NotEnded {
                pid,
                status: record.status.as_str(),
            });
        }
        let text = pid.to_string();
        let key = IdempotencyKey {
            key: format!("retry of {text}"),
            body_sha256: Digest::of(text.as_bytes()).hex(),
            stale_before: std::time::UNIX_EPOCH,
        };
        // The task's own checkpoint policy, if it named one, goes with it.
        let checkpoint = store
            .checkpoint_async(pid)
            .await?
            .and_then(|row| row.policy);
        Ok(self
            .spawn_async(resubmission(record, spec, checkpoint), Some(key))
            .await?)
    }

    /// The ended tasks `filter` matches, newest first, at most `filter.limit`.
    pub async fn ended_matching(&self, filter: &RetryFilter) -> Result<Vec<Pid>, StoreError> {
        let status = filter
            .status
            .or(filter.outcome.is_none().then_some(Status::Failed));
        let mut query = ListQuery {
            status,
            name: filter.name.clone(),
            worker: filter.worker.clone(),
            parent: None,
            schedule: None,
            before: None,
            limit: PAGE,
        };
        let mut found = Vec::new();
        loop {
            let page = self.store.list_async(&query).await?;
            found.extend(
                page.tasks
                    .iter()
                    .filter(|record| matches(record, filter))
                    .map(|record| record.pid),
            );
            if found.len() >= filter.limit {
                found.truncate(filter.limit);
                return Ok(found);
            }
            match page.next {
                Some(next) => query.before = Some(next),
                None => return Ok(found),
            }
        }
    }
}

/// Whether an ended `record` passes the filters a listing does not apply.
fn matches(record: &TaskRecord, filter: &RetryFilter) -> bool {
    record.status.is_terminal()
        && filter
            .outcome
            .is_none_or(|outcome| record.outcome == Some(outcome))
        && filter
            .ended_after
            .is_none_or(|after| record.ended_at.is_some_and(|ended| ended > after))
}

/// The submission a task was accepted with, as a new task that retries it.
fn resubmission(
    record: TaskRecord,
    spec: TaskSpec,
    checkpoint: Option<crate::model::CheckpointPolicy>,
) -> NewTask {
    let restart = if spec.max_attempts <= 1 {
        RestartPolicy::Never
    } else {
        RestartPolicy::OnFailure {
            max_attempts: spec.max_attempts.min(RestartPolicy::MAX_ATTEMPTS),
        }
    };
    NewTask {
        name: record.name,
        worker: Some(record.worker.to_string()),
        duration: record.duration,
        payload: spec.payload,
        deadline: Some(spec.deadline_secs),
        restart: Some(restart),
        on_host_loss: Some(spec.on_host_loss),
        run_at: None,
        priority: Some(spec.priority),
        retry_of: Some(record.pid),
        schedule: None,
        concurrency_key: record.concurrency_key,
        checkpoint,
    }
}
