//! One worker run in-process, with no scheduler, store or HTTP around it: a task instantiated,
//! stepped to its end without sleeping, and dropped. What `make bench` measures the sandbox
//! with, through this small surface rather than the runtime's insides.

use super::process::{StartSpec, TaskLimits};
use super::{LoadError, Module, Next, Sandbox, SandboxConfig, SandboxError, WorkerLimits};
use crate::actor::{Reply, Wake};
use crate::model::{Pid, TaskEnd};
use std::sync::Arc;

/// How an [`Embedded`] worker is set up.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Live instances the pool is sized for.
    pub capacity: u32,
    /// The task memory cap, and the pool's slot size.
    pub max_memory_bytes: usize,
    pub fuel_per_step: u64,
    /// Whether running steps are checked every epoch tick, as the host does by default.
    pub epoch_interruption: bool,
    /// Bytes of captured log kept per task.
    pub max_log_bytes: usize,
}

/// Why an embedded worker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A worker component loaded into a sandbox of its own, ready to run tasks to their end.
#[derive(Debug)]
pub struct Embedded {
    /// Keeps the engine for the module; the process's epoch ticker ticks it while it lives.
    _sandbox: Sandbox,
    module: Module,
}

impl Embedded {
    /// Loads the component `bytes`, through the same checks as a worker of the host.
    pub fn load(bytes: &[u8], config: &EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let sandbox = Sandbox::new(SandboxConfig {
            max_memory_bytes: config.max_memory_bytes,
            max_log_bytes: config.max_log_bytes,
            max_sends_per_step: u32::MAX,
            max_result_bytes: usize::MAX,
            capacity: config.capacity,
            epoch_interruption: config.epoch_interruption,
            cache_dir: None,
        })?;
        let limits = WorkerLimits {
            fuel_per_step: config.fuel_per_step,
            max_memory_bytes: config.max_memory_bytes,
        };
        let module = sandbox.load(&"embedded".into(), bytes, limits)?;
        Ok(Self {
            _sandbox: sandbox,
            module,
        })
    }

    /// One task start to end: instantiate, `start` with `payload`, every step without
    /// sleeping between them (a `receive` times out at once: no other task exists here),
    /// drop. Its exit code, or how it failed.
    pub fn run(&self, payload: Option<&str>) -> Result<i32, TaskEnd> {
        let pid = Pid::new(0, 1);
        let mut process = self.module.instantiate(pid, TaskLimits::unlimited())?;
        process.start(&StartSpec {
            pid,
            name: &Arc::from("embedded"),
            duration_secs: 0,
            payload,
            parent: None,
            attempt: 1,
        })?;
        let mut wake = Wake::Started;
        loop {
            match process.step(std::mem::replace(&mut wake, Wake::Slept))? {
                Next::Sleep(_) => {
                    process.woke();
                }
                Next::Receive(_) => wake = Wake::Timeout,
                // No other task exists here to answer.
                Next::Await(ticket) => wake = Wake::Replied(ticket, Reply::Timeout),
                Next::Done(code, _) => return Ok(code),
                Next::Failed(message) => return Err(TaskEnd::guest_error(message)),
            }
        }
    }
}
