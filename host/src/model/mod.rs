//! The vocabulary every other part of the host speaks, and which depends on none of them: a
//! task's pid, what a client asks for, how a task ends, the events of its life and the record
//! they fold into, its log lines, and how times and sizes are written.

mod checkpoint;
mod json;
mod log;
mod pid;
mod record;
pub mod schedule;
mod task;
mod text;
pub(crate) mod time;
mod units;

pub use checkpoint::{
    Carried, CarriedKind, CheckpointPolicy, CheckpointView, Resumed, StoredCheckpoint, Taken,
    Waiting,
};
pub use json::JsonText;
pub use log::{LogLine, LogSource, TaskLogs};
pub use pid::Pid;
pub(crate) use pid::{PidMap, Pids};
pub use record::{ActorState, Attempt, TaskEvent, TaskRecord};
pub use task::{
    DEFAULT_PRIORITY, MAX_PRIORITY, MAX_TASK_NAME_BYTES, NewTask, OnHostLoss, Outcome,
    RestartPolicy, Status, TaskEnd, TaskSpec,
};
pub use text::{Printable, error_text, one_line, storable};
pub use units::{WASM_PAGE_BYTES, parse_memory_size, parse_size};
