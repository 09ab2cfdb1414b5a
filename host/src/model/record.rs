//! The events of a task's life, and the record they fold into.
//!
//! Everything that happens to a task reaches the store as a [`TaskEvent`], applied in order to
//! its [`TaskRecord`] by [`TaskRecord::apply`]: the one projection every store shares.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::json::JsonText;
use super::log::LogLine;
use super::pid::Pid;
use super::task::{Outcome, Status, TaskEnd};
use super::time;

/// Something that happened to a task, in the order it happened.
#[derive(Debug)]
pub enum TaskEvent {
    /// The instance is up and `start` returned; it plans `steps` steps and has burnt `fuel`.
    Started {
        at: SystemTime,
        steps: u32,
        fuel: u64,
    },
    /// The task woke for step `step` (1-based) of the `steps` it planned; `fuel` is its total
    /// fuel consumed so far.
    Progress { step: u32, steps: u32, fuel: u64 },
    /// Lines the task logged or printed since the last event; `dropped_bytes` is the running
    /// total of what the capture cap discarded.
    Logs {
        lines: Vec<LogLine>,
        dropped_bytes: u64,
    },
    /// An attempt ended in failure (or with its host lost) and the task will run again as
    /// `next_attempt`, from `ready_at`.
    Restarting {
        at: SystemTime,
        fuel: u64,
        end: TaskEnd,
        next_attempt: u32,
        ready_at: SystemTime,
    },
    /// Attempt `attempt` ended the task; its store is gone. An end of any other attempt is
    /// stale and changes nothing.
    Ended {
        at: SystemTime,
        fuel: u64,
        end: TaskEnd,
        attempt: u32,
    },
}

/// How one attempt of a restartable task ended.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub status: Status,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[serde(serialize_with = "time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ended_at: SystemTime,
}

impl Attempt {
    fn of(attempt: u32, end: &TaskEnd, ended_at: SystemTime) -> Self {
        Self {
            attempt,
            status: end.status,
            outcome: end.outcome,
            exit_code: end.exit_code,
            error: end.error.clone(),
            ended_at,
        }
    }
}

/// A live task as an actor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ActorState {
    /// Entries waiting in its mailbox: messages, and `down` and `linked_exit` notices.
    pub mailbox: usize,
    /// The tasks linked to it.
    #[schema(value_type = Vec<String>)]
    pub links: Vec<Pid>,
    /// How many live tasks it monitors.
    pub monitors: usize,
    /// The name it registered, if any.
    pub name: Option<String>,
    /// Whether abnormal ends of linked tasks come to it as notices instead of ending it.
    pub trap_exits: bool,
}

/// What the host knows of one task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskRecord {
    #[schema(value_type = String, example = "6f1c2a9e-1")]
    pub pid: Pid,
    /// The task that spawned this one through the `spawn` host call; absent for a task
    /// submitted over HTTP.
    #[schema(value_type = Option<String>, example = "6f1c2a9e-1")]
    pub parent: Option<Pid>,
    pub name: String,
    /// The worker the task runs, by name.
    #[schema(value_type = String)]
    pub worker: Arc<str>,
    /// The worker's module version the task runs (the start of its SHA-256), fixed at spawn:
    /// a swap of the worker never changes what a task already accepted runs.
    #[schema(value_type = String)]
    pub version: Arc<str>,
    pub status: Status,
    /// The duration the client asked for, in seconds.
    pub duration: u32,
    /// Steps completed (wake-ups after a sleep).
    pub step: u32,
    /// Steps the guest planned (0 when it could not tell).
    pub steps: u32,
    pub exit_code: Option<i32>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// What the task returned when it exited, as the JSON it gave (`null` when it returned
    /// nothing, and until it has ended).
    #[schema(value_type = Option<Object>)]
    pub result: Option<JsonText>,
    #[serde(serialize_with = "time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub spawned_at: SystemTime,
    /// When a task accepted to run later may start (`null` for one that could start at once):
    /// it is `scheduled` until then.
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<SystemTime>,
    /// Its place among waiting tasks, 0 to 9: higher starts first.
    pub priority: u8,
    /// The ended task this one runs again, if it is a retry (`POST /api/tasks/{pid}/retry`).
    #[schema(value_type = Option<String>, example = "6f1c2a9e-1")]
    pub retry_of: Option<Pid>,
    /// Its key for its worker's `per_key_running` and `rate`.
    pub concurrency_key: Option<String>,
    /// The schedule whose tick created it, if one did.
    pub schedule: Option<String>,
    /// That tick: when the schedule fired.
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub schedule_tick: Option<SystemTime>,
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<SystemTime>,
    /// Fuel consumed over all steps, instantiation included (of the current attempt).
    pub fuel_consumed: u64,
    /// The attempt running or last run, from 1.
    pub attempt: u32,
    /// How each attempt of a task with a restart policy ended, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// While the task is live: its mailbox, links, monitors and name. Never stored: absent
    /// once the task has ended (and in the store's own copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Box<ActorState>>,
    /// Its checkpoints (issue #26): its policy, the latest taken, its resumptions. Read with
    /// the record of one task, not in lists; absent for a task that takes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Box<super::CheckpointView>>,
    /// In a cluster, the id of the host that holds the task now (see `GET /api/cluster`);
    /// absent while it waits in the shared queue, once it has ended, and on a host alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// Bytes of log the cap discarded. The lines themselves are kept apart, as [`TaskLogs`]
    /// (`GET /api/tasks/{pid}/logs`), so reading a record never copies its log.
    ///
    /// [`TaskLogs`]: super::TaskLogs
    pub logs_dropped_bytes: u64,
}

impl TaskRecord {
    /// The record of a task just accepted, with no parent: a task spawned by another sets
    /// `parent` after.
    pub fn spawned(
        pid: Pid,
        name: String,
        duration: u32,
        worker: Arc<str>,
        version: Arc<str>,
    ) -> Self {
        Self {
            pid,
            parent: None,
            actor: None,
            checkpoint: None,
            node: None,
            name,
            worker,
            version,
            status: Status::Spawned,
            duration,
            step: 0,
            steps: 0,
            exit_code: None,
            outcome: None,
            error: None,
            result: None,
            spawned_at: SystemTime::now(),
            run_at: None,
            priority: super::task::DEFAULT_PRIORITY,
            retry_of: None,
            concurrency_key: None,
            schedule: None,
            schedule_tick: None,
            started_at: None,
            ended_at: None,
            fuel_consumed: 0,
            attempt: 1,
            attempts: Vec::new(),
            logs_dropped_bytes: 0,
        }
    }

    /// Folds one event into the record; false when it ignored it. Events after the end are
    /// ignored: an ended task is never resurrected, whatever arrives late.
    pub fn apply(&mut self, event: &TaskEvent) -> bool {
        if self.status.is_terminal() {
            return false;
        }
        match event {
            // Ends and restarts of an attempt other than the current one are stale.
            TaskEvent::Ended { attempt, .. } if *attempt != self.attempt => return false,
            TaskEvent::Restarting { next_attempt, .. } if *next_attempt != self.attempt + 1 => {
                return false;
            }
            &TaskEvent::Started { at, steps, fuel } => {
                self.status = Status::Running;
                self.started_at = Some(at);
                self.steps = steps;
                self.fuel_consumed = fuel;
            }
            &TaskEvent::Progress { step, fuel, .. } => {
                self.step = step;
                self.fuel_consumed = fuel;
            }
            TaskEvent::Logs { dropped_bytes, .. } => {
                self.logs_dropped_bytes = *dropped_bytes;
            }
            TaskEvent::Restarting {
                at,
                fuel,
                end,
                next_attempt,
                ..
            } => {
                self.attempts.push(Attempt::of(self.attempt, end, *at));
                self.attempt = *next_attempt;
                self.status = Status::Spawned;
                self.step = 0;
                self.fuel_consumed = *fuel;
            }
            TaskEvent::Ended { at, fuel, end, .. } => {
                if !self.attempts.is_empty() {
                    self.attempts.push(Attempt::of(self.attempt, end, *at));
                }
                self.status = end.status;
                self.outcome = Some(end.outcome);
                self.exit_code = end.exit_code;
                self.error.clone_from(&end.error);
                self.result.clone_from(&end.result);
                self.ended_at = Some(*at);
                self.fuel_consumed = *fuel;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_task_ignores_later_events() {
        let mut record = TaskRecord::spawned(Pid::new(1, 1), "t".into(), 0, "w".into(), "v".into());
        let at = SystemTime::now();
        record.apply(&TaskEvent::Ended {
            at,
            fuel: 5,
            end: TaskEnd::exited(0),
            attempt: 1,
        });
        record.apply(&TaskEvent::Started {
            at,
            steps: 9,
            fuel: 1,
        });
        assert_eq!(record.status, Status::Exited);
        assert_eq!(record.steps, 0);
    }

    /// `result` is always written: `null` until the task has returned one, then the JSON it
    /// returned, as it returned it.
    #[test]
    fn the_result_is_written_null_or_as_the_json_returned() {
        let mut record = TaskRecord::spawned(Pid::new(1, 3), "t".into(), 0, "w".into(), "v".into());
        let json = |record: &TaskRecord| serde_json::to_value(record).expect("serializable");
        assert_eq!(json(&record)["result"], serde_json::Value::Null);
        let result = JsonText::parse(r#"{"sum": 42}"#.into()).expect("JSON");
        record.apply(&TaskEvent::Ended {
            at: SystemTime::now(),
            fuel: 1,
            end: TaskEnd::returned(0, Some(result)),
            attempt: 1,
        });
        assert_eq!(json(&record)["result"], serde_json::json!({ "sum": 42 }));
    }

    /// `parent` is always written: `null` for a task submitted over HTTP, never left out.
    #[test]
    fn the_parent_is_written_null_or_as_a_pid() {
        let mut record = TaskRecord::spawned(Pid::new(1, 2), "t".into(), 0, "w".into(), "v".into());
        let json = |record: &TaskRecord| serde_json::to_value(record).expect("serializable");
        assert_eq!(json(&record)["parent"], serde_json::Value::Null);
        record.parent = Some(Pid::new(1, 1));
        assert_eq!(json(&record)["parent"], "00000001-1");
    }
}
