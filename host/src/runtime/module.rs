//! A worker component made ready to run: compiled, type-checked against the `worker` world,
//! pre-linked and smoke-run once; then instantiated, in a store of its own, for every task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store};

use super::bindings::{v1, v2, v3};
use super::cache::Digest;
use super::capture::Capture;
use super::checkpoint::{Image, Refused, Support};
use super::interrupt::Interrupts;
use super::process::{
    Bindings, Process, StartSpec, TaskLimits, TaskState, classify, on_epoch_tick, refuel, spent,
};
use super::{LoadError, WorkerLimits};
use crate::model::{Outcome, Pid, TaskEnd};

/// The longest a module's smoke run may take, with epoch interruption on.
const SMOKE_RUN_DEADLINE: Duration = Duration::from_secs(5);

/// The pid and name a module's smoke run is started with.
const SMOKE_TASK_NAME: &str = "http-spawn-smoke-test";

/// Where a loaded module's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Compiled by this process.
    Compiled,
    /// Loaded from the compiled-module cache: no compilation.
    Cache,
}

/// A pre-linked worker, by the contract it was built against.
pub(super) enum Pre {
    V1(v1::WorkerPre<TaskState>),
    V2(v2::WorkerPre<TaskState>),
    V3 {
        pre: wasmtime::component::InstancePre<TaskState>,
        indices: v3::WorkerIndices,
        /// Its `checkpoint` interface, if it exports one.
        checkpoint: Option<Arc<Support>>,
    },
}

/// A worker component, compiled, checked against the `worker` world, smoke-run and pre-linked:
/// ready to be instantiated for any number of tasks.
pub struct Module {
    pub(super) worker: Arc<str>,
    pub(super) engine: Engine,
    pub(super) pre: Pre,
    pub(super) limits: WorkerLimits,
    pub(super) max_log_bytes: usize,
    pub(super) max_sends_per_step: u32,
    pub(super) max_result_bytes: usize,
    pub(super) digest: Digest,
    pub(super) origin: Origin,
    pub(super) size: usize,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("digest", &self.digest.short())
            .field("origin", &self.origin)
            .field("limits", &self.limits)
            .field("contract", &self.contract())
            .finish_non_exhaustive()
    }
}

impl Module {
    /// The name of the worker it was loaded for.
    pub fn worker(&self) -> &Arc<str> {
        &self.worker
    }

    /// The SHA-256 of the component's bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Whether this module was compiled or taken from the cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The version of the worker contract the component was built against: `0.3.0` (results
    /// and calls), `0.2.0` (actors) or `0.1.0` (sleep and finish only).
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
            Pre::V3 { .. } => "0.3.0",
        }
    }

    /// Where a task's limits are set, and nowhere else: its memory cap and the fuel of its
    /// first call.
    fn new_store(&self, pid: Pid, limits: TaskLimits) -> Store<TaskState> {
        let state = TaskState {
            pid,
            worker: Arc::clone(&self.worker),
            name: None,
            step: 0,
            deadline: limits.deadline,
            interrupts: limits.interrupts,
            max_memory_bytes: self.limits.max_memory_bytes,
            capture: Capture::new(self.max_log_bytes),
            host_log_left: self.max_log_bytes,
            max_sends_per_step: self.max_sends_per_step,
            sends_left: self.max_sends_per_step,
            max_result_bytes: self.max_result_bytes,
            wasi: None,
            kernel: limits.kernel,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.epoch_deadline_callback(on_epoch_tick);
        store
    }

    /// Instantiates the worker for one task, in a store of its own.
    pub fn instantiate(&self, pid: Pid, limits: TaskLimits) -> Result<Process, TaskEnd> {
        let mut store = self.new_store(pid, limits);
        let budget = self.limits.fuel_per_step;
        refuel(&mut store, budget);
        let mut instance_checkpoint = None;
        let instantiated = match &self.pre {
            Pre::V1(pre) => pre.instantiate(&mut store).map(Bindings::V1),
            Pre::V2(pre) => pre.instantiate(&mut store).map(Bindings::V2),
            Pre::V3 {
                pre,
                indices,
                checkpoint,
            } => pre.instantiate(&mut store).and_then(|instance| {
                let bindings = indices.load(&mut store, &instance)?;
                instance_checkpoint = checkpoint
                    .as_ref()
                    .map(|indices| (Arc::clone(indices), instance));
                Ok(Bindings::V3(bindings))
            }),
        };
        match instantiated {
            Ok(bindings) => {
                let fuel = spent(&store, budget);
                Ok(Process {
                    store,
                    bindings,
                    checkpoint: instance_checkpoint,
                    budget,
                    fuel,
                })
            }
            Err(error) => {
                let mut end = classify(&error, &store.data().capture, 0);
                if end.outcome == Outcome::Trap {
                    end.outcome = Outcome::InstantiationFailed;
                }
                Err(end)
            }
        }
    }

    /// Whether its worker exports the `checkpoint` interface: its tasks can be checkpointed
    /// between steps (unless one holds host resources at the time).
    pub fn checkpointable(&self) -> bool {
        matches!(
            &self.pre,
            Pre::V3 {
                checkpoint: Some(_),
                ..
            }
        )
    }

    /// A fresh instance of the module with `image`, a checkpoint of one of its tasks, written
    /// back: the task as it was between steps `steps_done` and the next, with its `name`. It
    /// goes on with `step`. An error says why the image could not be put back: the caller
    /// runs the task from its start instead.
    pub fn resume(
        &self,
        pid: Pid,
        limits: TaskLimits,
        image: &Image,
        name: &Arc<str>,
        steps_done: u32,
    ) -> Result<Process, Refused> {
        let mut process = self
            .instantiate(pid, limits)
            .map_err(|end| Refused(end.error.unwrap_or_else(|| end.outcome.as_str().into())))?;
        process.store.data_mut().name = Some(Arc::clone(name));
        process.restore(image, steps_done)?;
        Ok(process)
    }

    /// Learns what a fresh instance of the module holds, which its checkpoints leave out.
    pub(super) fn learn_pristine(&self) {
        if let Pre::V3 {
            checkpoint: Some(support),
            ..
        } = &self.pre
            && let Ok(mut fresh) = self.instantiate(Pid::new(0, 0), TaskLimits::unlimited())
        {
            support.learn(&mut fresh);
        }
    }

    /// Instantiates the module and calls `start` once, as for a task of duration 0, so a
    /// module that cannot even do that is refused before any task meets it.
    pub(super) fn smoke_run(&self) -> Result<(), LoadError> {
        let pid = Pid::new(0, 0);
        let refused = |end: TaskEnd| {
            let mut reason = end.error.unwrap_or_else(|| end.outcome.as_str().to_owned());
            if end.outcome == Outcome::MemoryLimit || reason.contains("minimum byte size") {
                reason.push_str("; raise the worker's max_memory (--max-memory)");
            }
            LoadError::SmokeFailed(reason)
        };
        // Bounded in time as well as by fuel, where epoch interruption is on: a module whose
        // `start` never returns must not hold up the next install for long.
        let limits = TaskLimits {
            deadline: Instant::now() + SMOKE_RUN_DEADLINE,
            interrupts: Interrupts::default(),
            kernel: None,
        };
        let mut process = self.instantiate(pid, limits).map_err(refused)?;
        let name = Arc::from(SMOKE_TASK_NAME);
        let spec = StartSpec {
            pid,
            name: &name,
            duration_secs: 0,
            payload: None,
            parent: None,
            attempt: 1,
        };
        process.start(&spec).map(drop).map_err(refused)
    }
}
