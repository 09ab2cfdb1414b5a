//! Checkpoints (issue #26): when a task's state is saved between two steps, and what the store
//! keeps of it, so that a task whose host is lost resumes where it was instead of running again
//! from its start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::Pid;
use super::time;

/// The longest `every <duration>` a policy may name.
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// When a task is checkpointed: never (`off`), after every step that leaves it waiting
/// (`every step`), or after such a step once `every <duration>` has passed since the last one,
/// or since the attempt started (`every 30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointPolicy {
    #[default]
    Off,
    EveryStep,
    Every(Duration),
}

impl CheckpointPolicy {
    /// The policy written as the registry file and the API write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "checkpoint must be \"off\", \"every step\" or \"every <duration>\" (\"every \
                 30s\", \"every 500ms\", \"every 5m\"; from 1ms to 7 days), not {text:?}"
            )
        };
        let text = text.trim();
        if text == "off" {
            return Ok(Self::Off);
        }
        let Some(rest) = text.strip_prefix("every ") else {
            return Err(bad());
        };
        let rest = rest.trim();
        if rest == "step" {
            return Ok(Self::EveryStep);
        }
        match humantime::parse_duration(rest) {
            Ok(every) if !every.is_zero() && every <= MAX_INTERVAL => Ok(Self::Every(every)),
            _ => Err(bad()),
        }
    }

    /// Whether checkpoints are taken at all.
    pub fn is_off(self) -> bool {
        self == Self::Off
    }

    /// Whether a checkpoint is due now, the last one taken at `last` (none yet: `None`).
    pub fn due(self, last: Option<Instant>, now: Instant) -> bool {
        match self {
            Self::Off => false,
            Self::EveryStep => true,
            Self::Every(every) => last.is_none_or(|last| now.duration_since(last) >= every),
        }
    }
}

impl std::fmt::Display for CheckpointPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::EveryStep => f.write_str("every step"),
            Self::Every(every) => write!(f, "every {}", humantime::format_duration(*every)),
        }
    }
}

/// What a task waited for when its checkpoint was taken, with the absolute time the wait ends:
/// what it is given back when it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// A sleep, to wake at `until`.
    Sleep { until: SystemTime },
    /// A `receive`, to time out at `until` unless a message comes.
    Receive { until: SystemTime },
    /// The answer to call `ticket`, at most until `until`.
    Await { ticket: u64, until: SystemTime },
}

impl Waiting {
    /// When the wait ends.
    pub fn until(self) -> SystemTime {
        match self {
            Self::Sleep { until } | Self::Receive { until } | Self::Await { until, .. } => until,
        }
    }

    /// Its kind, as the API names it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Sleep { .. } => "sleep",
            Self::Receive { .. } => "receive",
            Self::Await { .. } => "await",
        }
    }
}

/// A task's checkpoint as the store keeps it: the task's own policy from its acceptance, if it
/// named one; then its latest image with what it waited for; and its resumptions. One per
/// task, written over as it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub pid: Pid,
    /// The policy its submission named, if any (its worker's applies otherwise).
    pub policy: Option<CheckpointPolicy>,
    /// The attempt the image belongs to.
    pub attempt: u32,
    /// The latest image, if one was taken; dropped once the task has ended.
    pub taken: Option<Taken>,
    /// Why the latest checkpoint due could not be taken, if it could not.
    pub refused: Option<String>,
    /// Times the task resumed from a checkpoint.
    pub resumes: u32,
    /// Of those, the resumptions after its host was lost (not handed on): past a few, the
    /// task may be what brings its host down, and it runs again from its start instead.
    pub crash_resumes: u32,
    /// The latest resumption, if any.
    pub resumed: Option<Resumed>,
}

/// An image taken between two steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Steps done when it was taken.
    pub step: u32,
    pub at: SystemTime,
    /// Fuel the attempt had burnt then.
    pub fuel: u64,
    pub waiting: Waiting,
    /// The image (see `runtime::Image`), or none once the task has ended: its size stays.
    pub image: Option<Arc<[u8]>>,
    pub bytes: u64,
    /// Taken as its host shut down, to hand the task on: resuming from it is no sign that
    /// the task brings its host down.
    pub handed_over: bool,
    /// The name the task had registered then, given back when it resumes (if still free).
    pub name: Option<String>,
    /// Whether it trapped exits then.
    pub trap_exits: bool,
    /// The tasks it was linked to, and those it monitored, then: linked and monitored again
    /// when it resumes (one that ended meanwhile sends its exit, or its `down`, at once).
    pub links: Vec<Pid>,
    pub monitors: Vec<Pid>,
    /// What its mailbox held then, oldest first, put back when it resumes. Calls waiting
    /// there are not carried: whoever waits for their answer is on the host they were made on.
    pub mailbox: Vec<Carried>,
}

/// An entry of a task's mailbox as a checkpoint carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub kind: CarriedKind,
    /// A message's sender (none: an HTTP client), or the task whose end a notice tells.
    pub from: Option<Pid>,
    /// A message's body, or a notice's end as JSON (`{status, outcome, exit_code, error,
    /// result}`).
    pub body: String,
}

/// What kind of mailbox entry a [`Carried`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarriedKind {
    Message,
    /// A monitored task's end.
    Down,
    /// A linked task's abnormal end, trapped.
    LinkedExit,
}

impl CarriedKind {
    /// Its name, as the store writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Down => "down",
            Self::LinkedExit => "linked_exit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "message" => Some(Self::Message),
            "down" => Some(Self::Down),
            "linked_exit" => Some(Self::LinkedExit),
            _ => None,
        }
    }
}

/// A resumption from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The steps done at the checkpoint it resumed from.
    pub from_step: u32,
    pub at: SystemTime,
    /// The time from the checkpoint to the resumption: the work since it, and the outage.
    pub lost: Duration,
}

impl StoredCheckpoint {
    /// A task's row before any image: its own policy.
    pub fn policy(pid: Pid, policy: CheckpointPolicy, attempt: u32) -> Self {
        Self {
            pid,
            policy: Some(policy),
            attempt,
            taken: None,
            refused: None,
            resumes: 0,
            crash_resumes: 0,
            resumed: None,
        }
    }

    /// What the API shows of it in the task's record.
    pub fn view(&self, worker_policy: CheckpointPolicy) -> CheckpointView {
        let taken = self.taken.as_ref();
        CheckpointView {
            policy: self.policy.unwrap_or(worker_policy).to_string(),
            step: taken.map(|taken| taken.step),
            taken_at: taken.map(|taken| taken.at),
            bytes: taken.map(|taken| taken.bytes),
            waiting: taken.map(|taken| taken.waiting.kind()),
            mailbox: taken.map(|taken| taken.mailbox.len()),
            handed_over: taken.is_some_and(|taken| taken.handed_over),
            refused: self.refused.clone(),
            resumes: self.resumes,
            resumed_from_step: self.resumed.map(|resumed| resumed.from_step),
            resumed_at: self.resumed.map(|resumed| resumed.at),
            lost_ms: self
                .resumed
                .map(|resumed| u64::try_from(resumed.lost.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// A task's checkpoints as its record shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    /// `off`, `every step` or `every <duration>`: the task's own, or its worker's.
    pub policy: String,
    /// Steps done at the latest checkpoint.
    pub step: Option<u32>,
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub taken_at: Option<SystemTime>,
    /// The latest checkpoint's size.
    pub bytes: Option<u64>,
    /// What the task waited for then: `sleep`, `receive` or `await`.
    pub waiting: Option<&'static str>,
    /// Entries its mailbox held then, carried with it.
    pub mailbox: Option<usize>,
    /// Whether it was taken as the host shut down, to hand the task on.
    pub handed_over: bool,
    /// Why the latest checkpoint due was not taken (the task then runs again from its start
    /// if its host is lost, or from an earlier checkpoint).
    pub refused: Option<String>,
    /// Times it resumed from a checkpoint.
    pub resumes: u32,
    /// The step of the checkpoint it last resumed from.
    pub resumed_from_step: Option<u32>,
    #[serde(serialize_with = "time::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resumed_at: Option<SystemTime>,
    /// Milliseconds from that checkpoint to the resumption: the work it lost, and the outage.
    pub lost_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_back() {
        for (text, policy) in [
            ("off", CheckpointPolicy::Off),
            ("every step", CheckpointPolicy::EveryStep),
            (
                "every 30s",
                CheckpointPolicy::Every(Duration::from_secs(30)),
            ),
            (
                "every 500ms",
                CheckpointPolicy::Every(Duration::from_millis(500)),
            ),
        ] {
            assert_eq!(CheckpointPolicy::parse(text), Ok(policy), "{text}");
            assert_eq!(CheckpointPolicy::parse(&policy.to_string()), Ok(policy));
        }
        for bad in [
            "",
            "on",
            "every",
            "every 0s",
            "every 8days",
            "every  steps",
            "30s",
        ] {
            assert!(CheckpointPolicy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_checkpoint_is_due_by_its_policy() {
        let now = Instant::now();
        let every = CheckpointPolicy::Every(Duration::from_secs(10));
        assert!(!CheckpointPolicy::Off.due(None, now));
        assert!(CheckpointPolicy::EveryStep.due(Some(now), now));
        assert!(every.due(None, now));
        assert!(!every.due(Some(now), now + Duration::from_secs(9)));
        assert!(every.due(Some(now), now + Duration::from_secs(10)));
    }
}
