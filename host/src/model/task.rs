//! A task as a client asks for it, how it may be restarted, and how it ends.

use super::{JsonText, Pid};
use serde::Serialize;

/// The longest name a task may have, in bytes, whether a client or a task asks for it.
pub const MAX_TASK_NAME_BYTES: usize = 256;

/// A task as a client asks for it, already validated. Its `Default` asks for nothing beyond
/// what a task must have (a name), for the callers that set only the fields they take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTask {
    pub name: String,
    /// The worker to run; the default one when absent.
    pub worker: Option<String>,
    pub duration: u32,
    /// JSON text handed to the guest.
    pub payload: Option<String>,
    /// Wall-clock limit in seconds from start; the duration plus the grace when absent.
    pub deadline: Option<u32>,
    /// Whether a failed attempt runs again; the worker's policy when absent.
    pub restart: Option<RestartPolicy>,
    /// What becomes of the task if the host is lost while it runs; the worker's when absent.
    pub on_host_loss: Option<OnHostLoss>,
    /// When it may start, if later than now: it waits `scheduled` until then.
    pub run_at: Option<std::time::SystemTime>,
    /// Which waiting task starts first, 0 to 9 (higher first); the worker's when absent.
    pub priority: Option<u8>,
    /// The ended task this one runs again (`POST /api/tasks/{pid}/retry`).
    pub retry_of: Option<Pid>,
    /// The schedule, and its tick, that created it.
    pub schedule: Option<(String, std::time::SystemTime)>,
    /// Its key for its worker's `per_key_running` and `rate` (a tenant, say).
    pub concurrency_key: Option<String>,
    /// When it is checkpointed between steps; the worker's policy when absent.
    pub checkpoint: Option<super::CheckpointPolicy>,
}

/// What a task needs, beyond its record, to run again after the host was lost: kept by a
/// durable store with the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The SHA-256 of the module version it runs, in hex.
    pub module_sha256: String,
    pub payload: Option<String>,
    /// Its wall-clock limit, counted from each attempt's start.
    pub deadline_secs: u32,
    pub max_attempts: u32,
    pub on_host_loss: OnHostLoss,
    /// When a restart waiting out its backoff is due, or a scheduled task's `run_at`.
    pub ready_at: Option<std::time::SystemTime>,
    /// Its place among waiting tasks, 0 to 9: higher starts first.
    pub priority: u8,
}

/// Priorities run from 0 to 9: higher starts first.
pub const MAX_PRIORITY: u8 = 9;
/// A task's priority when neither it nor its worker names one.
pub const DEFAULT_PRIORITY: u8 = 5;

/// What becomes of a task whose host is lost (a crash, a kill -9, a power cut) while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OnHostLoss {
    /// It runs again from the start, as a new attempt: at least once.
    #[default]
    Restart,
    /// It ends `failed`, with the outcome `host_lost`: at most once.
    Fail,
}

impl OnHostLoss {
    /// The name the API, the registry file and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Fail => "fail",
        }
    }

    /// The policy called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "restart" => Some(Self::Restart),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }
}

/// Where a task is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted to run later (its `run_at`), and not started yet.
    Scheduled,
    /// Accepted, not yet instantiated.
    Spawned,
    /// Instantiated; between or inside steps.
    Running,
    /// The guest finished with an exit code (which may be non-zero).
    Exited,
    /// The task ended without an exit code: a trap, a limit, or the guest's own `failed`.
    Failed,
    /// Stopped by the host or an operator.
    Killed,
}

impl Status {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Spawned => "spawned",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }

    /// Whether the task has ended and will change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Exited | Self::Failed | Self::Killed)
    }

    /// The status called `name`, as [`Status::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Scheduled,
            Self::Spawned,
            Self::Running,
            Self::Exited,
            Self::Failed,
            Self::Killed,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

/// Why a task ended, finer than its [`Status`]: what an operator filters and alerts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest returned `done` with an exit code.
    Exit,
    /// The guest returned `failed`, or its `start` returned an error.
    GuestError,
    /// A step used up its fuel budget.
    OutOfFuel,
    /// The guest tried to grow its memory past the cap.
    MemoryLimit,
    /// The guest overflowed its wasm stack.
    StackOverflow,
    /// The guest panicked (a Rust guest's panic message reached its stderr before it trapped).
    Panic,
    /// Any other trap, or a host call the sandbox refused.
    Trap,
    /// The guest returned a result larger than the host keeps (`--max-result-bytes`).
    ResultTooLarge,
    /// The guest returned a result that is not JSON.
    BadResult,
    /// The worker could not be instantiated for this task.
    InstantiationFailed,
    /// The task ran past its wall-clock limit.
    DeadlineExceeded,
    /// The host stopped the task.
    Killed,
    /// A task linked to it ended abnormally, and it did not trap exits.
    LinkedExit,
    /// The host running the attempt was lost (a crash, a kill -9, a power cut).
    HostLost,
}

impl Outcome {
    /// Every outcome, for parsing.
    pub(crate) const ALL: [Self; 14] = [
        Self::Exit,
        Self::GuestError,
        Self::OutOfFuel,
        Self::MemoryLimit,
        Self::StackOverflow,
        Self::Panic,
        Self::Trap,
        Self::ResultTooLarge,
        Self::BadResult,
        Self::InstantiationFailed,
        Self::DeadlineExceeded,
        Self::Killed,
        Self::LinkedExit,
        Self::HostLost,
    ];

    /// The outcome called `name`, as [`Outcome::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }

    /// The name the API and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::GuestError => "guest_error",
            Self::OutOfFuel => "out_of_fuel",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::ResultTooLarge => "result_too_large",
            Self::BadResult => "bad_result",
            Self::InstantiationFailed => "instantiation_failed",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Killed => "killed",
            Self::LinkedExit => "linked_exit",
            Self::HostLost => "host_lost",
        }
    }
}

/// How a task (or one attempt of it) ended: what the scheduler reports and the store records.
/// Built only through the constructors below, so each kind of end reads the same wherever it
/// happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// `exited`, `failed` or `killed`.
    pub status: Status,
    /// Why, in a word.
    pub outcome: Outcome,
    /// The guest's exit code, when it gave one.
    pub exit_code: Option<i32>,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// What the guest returned with its exit code, JSON text; none when it returned nothing
    /// (and for every end but an exit).
    pub result: Option<JsonText>,
}

impl TaskEnd {
    /// The guest returned `done(code)`.
    pub fn exited(code: i32) -> Self {
        Self::returned(code, None)
    }

    /// The guest returned `done` with `code` and `result`.
    pub fn returned(code: i32, result: Option<JsonText>) -> Self {
        Self {
            status: Status::Exited,
            outcome: Outcome::Exit,
            exit_code: Some(code),
            error: None,
            result,
        }
    }

    /// The task failed with `outcome`, for the reason `message` (which may be a guest's: it is
    /// made storable and cut to a few KiB by [`error_text`](super::error_text)).
    pub fn failed(outcome: Outcome, message: String) -> Self {
        Self {
            status: Status::Failed,
            outcome,
            exit_code: None,
            error: Some(super::error_text(message)),
            result: None,
        }
    }

    /// The guest said it failed: `failed(message)` from a step, or an error from `start`.
    pub fn guest_error(message: String) -> Self {
        Self::failed(Outcome::GuestError, message)
    }

    /// The host or an operator stopped the task.
    pub fn killed() -> Self {
        Self {
            status: Status::Killed,
            outcome: Outcome::Killed,
            exit_code: None,
            error: Some("killed".into()),
            result: None,
        }
    }

    /// Task `linked`, linked to this one, ended abnormally (`how`), and this one does not
    /// trap exits: it is killed, as Erlang propagates an exit signal.
    pub fn linked_exit(linked: Pid, how: &str) -> Self {
        Self {
            status: Status::Killed,
            outcome: Outcome::LinkedExit,
            exit_code: None,
            error: Some(format!("linked task {linked} ended abnormally ({how})")),
            result: None,
        }
    }

    /// The task ran past its wall-clock limit, during or between steps, at `step`.
    pub fn deadline_exceeded(step: u32) -> Self {
        Self::failed(
            Outcome::DeadlineExceeded,
            format!("deadline exceeded at step {step}"),
        )
    }

    /// Host code running for the task failed (a bug): the task ends, the host goes on.
    pub fn host_error(message: &str) -> Self {
        Self::failed(Outcome::Trap, format!("host error: {message}"))
    }

    /// The host running attempt `attempt` was lost.
    pub fn host_lost(attempt: u32) -> Self {
        Self::failed(
            Outcome::HostLost,
            format!("the host was lost while attempt {attempt} ran"),
        )
    }

    /// The task was accepted as the host began to shut down, and never started.
    pub fn shut_down_before_start() -> Self {
        Self::failed(
            Outcome::InstantiationFailed,
            "the host is shutting down".into(),
        )
    }

    /// Whether a restart policy retries after this end: any failure or non-zero exit code;
    /// never exit 0 or a kill.
    pub fn is_failure(&self) -> bool {
        self.status == Status::Failed
            || (self.status == Status::Exited && self.exit_code != Some(0))
    }
}

/// Whether a failed attempt runs again, Erlang-style: `never`, or `on-failure` with a number
/// of attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure { max_attempts: u32 },
}

/// Why a restart policy was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    #[error("restart must be \"never\" or \"on-failure\"")]
    UnknownPolicy,
    #[error(
        "max_attempts must be an integer from 2 to {}",
        RestartPolicy::MAX_ATTEMPTS
    )]
    Attempts,
    #[error("max_attempts goes with restart: \"on-failure\"")]
    AttemptsWithoutRestart,
}

impl RestartPolicy {
    /// Attempts in all under `on-failure` when none are named.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// The most attempts a policy may ask for.
    pub const MAX_ATTEMPTS: u32 = 10;

    /// The policy named by `restart` (`"never"` or `"on-failure"`) and `max_attempts`, as a
    /// request body or the registry file gives them; `None` when neither is given.
    pub fn parse(
        restart: Option<&str>,
        max_attempts: Option<u64>,
    ) -> Result<Option<Self>, RestartError> {
        match (restart, max_attempts) {
            (None, None) => Ok(None),
            (Some("never"), None) => Ok(Some(Self::Never)),
            (Some("on-failure"), None) => Ok(Some(Self::OnFailure {
                max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            })),
            (Some("on-failure"), Some(n)) => match u32::try_from(n) {
                Ok(n) if (2..=Self::MAX_ATTEMPTS).contains(&n) => {
                    Ok(Some(Self::OnFailure { max_attempts: n }))
                }
                _ => Err(RestartError::Attempts),
            },
            (None | Some("never"), Some(_)) => Err(RestartError::AttemptsWithoutRestart),
            (Some(_), _) => Err(RestartError::UnknownPolicy),
        }
    }

    /// How many times a task may run in all: 1 never restarts it.
    pub fn max_attempts(self) -> u32 {
        match self {
            Self::Never => 1,
            Self::OnFailure { max_attempts } => max_attempts,
        }
    }

    /// The name the API and the registry file use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure { .. } => "on-failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_with_their_reasons() {
        let on_failure = |max_attempts| Ok(Some(RestartPolicy::OnFailure { max_attempts }));
        assert_eq!(RestartPolicy::parse(None, None), Ok(None));
        assert_eq!(
            RestartPolicy::parse(Some("never"), None),
            Ok(Some(RestartPolicy::Never))
        );
        assert_eq!(
            RestartPolicy::parse(Some("on-failure"), None),
            on_failure(3)
        );
        assert_eq!(
            RestartPolicy::parse(Some("on-failure"), Some(10)),
            on_failure(10)
        );
        for (restart, attempts, error) in [
            (Some("on-failure"), Some(1), RestartError::Attempts),
            (Some("on-failure"), Some(11), RestartError::Attempts),
            (Some("on-failure"), Some(u64::MAX), RestartError::Attempts),
            (None, Some(3), RestartError::AttemptsWithoutRestart),
            (Some("never"), Some(3), RestartError::AttemptsWithoutRestart),
            (Some("always"), None, RestartError::UnknownPolicy),
        ] {
            assert_eq!(RestartPolicy::parse(restart, attempts), Err(error));
        }
    }
}
