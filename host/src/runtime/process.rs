//! One task's instance: its store and everything in it ([`TaskState`]), the calls into the
//! guest with a fresh fuel budget each, and the classification of a failed call into a
//! recorded end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{v1, v2, v3};
use super::capture::Capture;
use super::contract;
use super::engine::{
    MAX_CORE_INSTANCES_PER_COMPONENT, MAX_MEMORIES_PER_COMPONENT, MAX_TABLE_ELEMENTS,
    MAX_TABLES_PER_COMPONENT,
};
use super::interrupt::Interrupts;
use crate::actor::{Kernel, Wake};
use crate::model::{JsonText, LogSource, Outcome, Pid, Printable, TaskEnd, one_line};

/// What a step asks the host to do next, whichever contract the worker was built against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wake after this many milliseconds.
    Sleep(u32),
    /// Wake on the next mailbox entry, or after this many milliseconds without one.
    Receive(u32),
    /// Wake with what came of the call with this ticket.
    Await(u64),
    /// Finished with this exit code, and the result returned with it, if any.
    Done(i32, Option<JsonText>),
    /// Failed with this message.
    Failed(String),
}

/// The worker's exports, by the contract it was built against.
pub(super) enum Bindings {
    V1(v1::Worker),
    V2(v2::Worker),
    V3(v3::Worker),
}

/// The guest grew its memory past the task's cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest asked for {desired} bytes, the cap is {max} bytes")]
struct MemoryLimitExceeded {
    desired: usize,
    max: usize,
}

/// The WASI version whose `poll` the sandbox refuses; it must match wasmtime-wasi's own.
pub(super) const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// The guest tried to block inside WASI, which would hold a host thread.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest tried to block in {WASI_IO_POLL} (a sleep or a wait); a worker waits by returning \
     `next::sleep` from `step`"
)]
pub(super) struct BlockingRefused;

/// Why the host stopped a running call.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("killed")]
    Killed,
    #[error("deadline exceeded while a step ran")]
    Deadline,
}

/// The data of one task's store: the one place a task's identity, progress and limits live
/// while it runs.
pub struct TaskState {
    pub(super) pid: Pid,
    /// The worker's name, for log lines.
    pub(super) worker: Arc<str>,
    /// The task's name, once it has started: what its lines in the host's log carry.
    pub(super) name: Option<Arc<str>>,
    /// Steps completed: wake-ups after a sleep. Also what log lines and failures name.
    pub(super) step: u32,
    /// When the task's wall-clock limit runs out.
    pub(super) deadline: Instant,
    /// Kills posted to the task's scheduler thread; read at every epoch tick while a step runs.
    pub(super) interrupts: Interrupts,
    pub(super) max_memory_bytes: usize,
    pub(super) capture: Capture,
    /// Bytes of its `log` calls the task may still write to the host's own log (as many as its
    /// capture keeps): a task that logs without end fills its capture, not the operator's log.
    pub(super) host_log_left: usize,
    /// Sends a step may make; `sends_left` counts down the current step's.
    pub(super) max_sends_per_step: u32,
    pub(super) sends_left: u32,
    /// The largest result the task may return.
    pub(super) max_result_bytes: usize,
    /// Built on first use: most workers never touch WASI.
    pub(super) wasi: Option<Box<WasiState>>,
    /// The host's actor calls (send, spawn, monitor, ...); none for smoke runs and
    /// benchmarks, where they answer as if no other task existed.
    pub(super) kernel: Option<Arc<dyn Kernel>>,
}

pub(super) struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// Whether the guest holds no WASI resource (no stream, no pollable) now.
    pub(super) fn table_is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl std::fmt::Debug for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskState")
            .field("pid", &self.pid)
            .field("wasi", &self.wasi.is_some())
            .finish_non_exhaustive()
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let capture = &self.capture;
        let wasi = self.wasi.get_or_insert_with(|| {
            // Nothing is granted: WasiCtxBuilder starts with no preopens, environment or
            // arguments, and stdin empty; sockets are switched off outright.
            let ctx = WasiCtxBuilder::new()
                .stdout(capture.stdout())
                .stderr(capture.stderr())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build();
            Box::new(WasiState {
                ctx,
                table: ResourceTable::new(),
            })
        });
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl v1::http_spawn::worker::host::Host for TaskState {
    fn log(&mut self, level: v1::http_spawn::worker::host::Level, message: String) {
        use v1::http_spawn::worker::host::Level as V1;
        let level = match level {
            V1::Trace => LogSource::Trace,
            V1::Debug => LogSource::Debug,
            V1::Info => LogSource::Info,
            V1::Warn => LogSource::Warn,
            V1::Error => LogSource::Error,
        };
        self.log_line(level, message);
    }
}

impl v2::http_spawn::worker::types::Host for TaskState {}

impl v3::http_spawn::worker::types::Host for TaskState {}

impl TaskState {
    /// Records a line the task logged at `level` (one of the levels of [`LogSource`]).
    pub(super) fn log_line(&mut self, level: LogSource, message: String) {
        if self.host_log_left > 0 {
            self.host_log(level, &message);
        }
        self.capture.line(level, message);
    }

    /// Writes a line of the task's to the host's log, within the task's share of it, with the
    /// task's pid and name.
    fn host_log(&mut self, level: LogSource, message: &str) {
        let pid = self.pid;
        let name = Printable(self.name.as_deref().unwrap_or_default());
        if message.len() > self.host_log_left {
            self.host_log_left = 0;
            tracing::warn!(target: "guest", %pid, %name,
                "this task has logged its share of the host's log (--max-log-bytes): its further \
                 lines are not written here; its captured log keeps what its own share holds");
            return;
        }
        self.host_log_left -= message.len();
        // The host's own log gets the line on one line: a guest must not forge host lines.
        let line = one_line(message);
        match level {
            LogSource::Trace => tracing::trace!(target: "guest", %pid, %name, "{line}"),
            LogSource::Debug => tracing::debug!(target: "guest", %pid, %name, "{line}"),
            LogSource::Info | LogSource::Stdout => {
                tracing::info!(target: "guest", %pid, %name, "{line}");
            }
            LogSource::Warn | LogSource::Stderr => {
                tracing::warn!(target: "guest", %pid, %name, "{line}");
            }
            LogSource::Error => tracing::error!(target: "guest", %pid, %name, "{line}"),
        }
    }
}

impl ResourceLimiter for TaskState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // An error, unlike `Ok(false)`, traps at once with a cause the host can recognise, so a
        // memory-limit kill is never mistaken for the guest's own bug.
        if desired > self.max_memory_bytes {
            return Err(MemoryLimitExceeded {
                desired,
                max: self.max_memory_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_COMPONENT as usize
    }
}

/// What `start` tells a task.
#[derive(Debug, Clone, Copy)]
pub struct StartSpec<'a> {
    pub pid: Pid,
    pub name: &'a Arc<str>,
    pub duration_secs: u32,
    pub payload: Option<&'a str>,
    pub parent: Option<Pid>,
    pub attempt: u32,
}

/// The per-task limits and links that are not the worker's: when the task must end, where
/// kills for it are posted, and the host its actor calls reach.
#[derive(Debug, Clone)]
pub struct TaskLimits {
    pub deadline: Instant,
    pub interrupts: Interrupts,
    pub kernel: Option<Arc<dyn Kernel>>,
}

impl TaskLimits {
    /// No deadline to speak of and no kill: for probes and benchmarks.
    pub fn unlimited() -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(86_400 * 365),
            interrupts: Interrupts::default(),
            kernel: None,
        }
    }
}

/// One task's instance: its store, and the handles to call it.
pub struct Process {
    pub(super) store: Store<TaskState>,
    pub(super) bindings: Bindings,
    /// Its worker's `checkpoint` interface and the instance to call it on, if it exports one.
    pub(super) checkpoint: Option<(
        Arc<super::checkpoint::Support>,
        wasmtime::component::Instance,
    )>,
    pub(super) budget: u64,
    pub(super) fuel: u64,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("state", self.store.data())
            .field("fuel", &self.fuel)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Calls the guest's `start`; returns the steps it plans.
    pub fn start(&mut self, spec: &StartSpec<'_>) -> Result<u32, TaskEnd> {
        refuel(&mut self.store, self.budget);
        self.store.data_mut().name = Some(Arc::clone(spec.name));
        let result = match &self.bindings {
            Bindings::V1(bindings) => {
                let spec = v1::exports::http_spawn::worker::task::Spec {
                    pid: spec.pid.to_string(),
                    name: spec.name.to_string(),
                    duration_secs: spec.duration_secs,
                    payload: spec.payload.map(str::to_owned),
                };
                bindings
                    .http_spawn_worker_task()
                    .call_start(&mut self.store, &spec)
            }
            Bindings::V2(bindings) => bindings
                .http_spawn_worker_task()
                .call_start(&mut self.store, &contract::v2_spec(spec)),
            Bindings::V3(bindings) => bindings
                .http_spawn_worker_task()
                .call_start(&mut self.store, &contract::v3_spec(spec)),
        };
        self.fuel += spent(&self.store, self.budget);
        match result {
            Ok(Ok(steps)) => Ok(steps),
            Ok(Err(message)) => Err(TaskEnd::guest_error(format!("start failed: {message}"))),
            Err(error) => Err(classify(&error, &self.store.data().capture, 0)),
        }
    }

    /// Counts a wake-up after a sleep: one more step completed. Returns the count.
    pub fn woke(&mut self) -> u32 {
        let state = self.store.data_mut();
        state.step += 1;
        state.step
    }

    /// Steps completed so far.
    pub fn steps_done(&self) -> u32 {
        self.store.data().step
    }

    /// When the task's wall-clock limit runs out.
    pub fn deadline(&self) -> Instant {
        self.store.data().deadline
    }

    /// The name of the worker it runs.
    pub fn worker(&self) -> &Arc<str> {
        &self.store.data().worker
    }

    /// Runs the next step with a fresh fuel budget, told what woke the task (a 0.1.0 worker
    /// is not told).
    pub fn step(&mut self, wake: Wake) -> Result<Next, TaskEnd> {
        let step = self.store.data().step;
        refuel(&mut self.store, self.budget);
        // The outer error is the call's (a trap, a kill); the inner, what the step asked for
        // that ends the task (a result 0.3.0 refuses).
        let result = match &self.bindings {
            Bindings::V1(bindings) => {
                use v1::exports::http_spawn::worker::task::Next as V1;
                bindings
                    .http_spawn_worker_task()
                    .call_step(&mut self.store)
                    .map(|next| {
                        Ok(match next {
                            V1::Sleep(ms) => Next::Sleep(ms),
                            V1::Done(code) => Next::Done(code, None),
                            V1::Failed(message) => Next::Failed(message),
                        })
                    })
            }
            Bindings::V2(bindings) => bindings
                .http_spawn_worker_task()
                .call_step(&mut self.store, &contract::v2_wake(wake))
                .map(|next| Ok(contract::v2_next(next))),
            Bindings::V3(bindings) => {
                let max_result_bytes = self.store.data().max_result_bytes;
                bindings
                    .http_spawn_worker_task()
                    .call_step(&mut self.store, &contract::v3_wake(wake))
                    .map(|next| contract::v3_next(next, max_result_bytes))
            }
        };
        self.fuel += spent(&self.store, self.budget);
        result.unwrap_or_else(|error| Err(classify(&error, &self.store.data().capture, step)))
    }

    /// Whether the worker speaks the 0.2.0 contract or a later one (it can receive messages).
    pub fn is_actor(&self) -> bool {
        matches!(self.bindings, Bindings::V2(_) | Bindings::V3(_))
    }

    /// Counts `fuel` burnt before this instance: by the attempt it goes on with, resumed from
    /// a checkpoint.
    pub fn count_fuel(&mut self, fuel: u64) {
        self.fuel = self.fuel.saturating_add(fuel);
    }

    /// Fuel burnt so far, instantiation included.
    pub fn fuel(&self) -> u64 {
        self.fuel
    }

    /// The task's log capture.
    pub fn capture(&self) -> &Capture {
        &self.store.data().capture
    }
}

/// Prepares the store for a call into the guest: a fresh fuel budget, and an epoch deadline one
/// tick away so that kills and the wall-clock limit are checked while the call runs.
pub(super) fn refuel(store: &mut Store<TaskState>, budget: u64) {
    // Fuel is enabled on every engine this module builds, so this cannot fail.
    let _ = store.set_fuel(budget);
    store.set_epoch_deadline(1);
    super::engine::busy();
    let state = store.data_mut();
    state.sends_left = state.max_sends_per_step;
}

/// Called at every epoch tick while a task's guest code runs.
pub(super) fn on_epoch_tick(
    store: StoreContextMut<'_, TaskState>,
) -> wasmtime::Result<UpdateDeadline> {
    super::engine::busy();
    let state = store.data();
    if state.interrupts.contains(state.pid) {
        return Err(Interrupted::Killed.into());
    }
    if Instant::now() >= state.deadline {
        return Err(Interrupted::Deadline.into());
    }
    Ok(UpdateDeadline::Continue(1))
}

pub(super) fn spent(store: &Store<TaskState>, budget: u64) -> u64 {
    budget.saturating_sub(store.get_fuel().unwrap_or(0))
}

/// Turns a failed call into a recorded end: what kind of failure, and a message for people.
pub(super) fn classify(error: &wasmtime::Error, capture: &Capture, step: u32) -> TaskEnd {
    let failed = TaskEnd::failed;
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return failed(Outcome::MemoryLimit, limit.to_string());
    }
    match error.downcast_ref::<Interrupted>() {
        Some(Interrupted::Killed) => return TaskEnd::killed(),
        Some(Interrupted::Deadline) => return TaskEnd::deadline_exceeded(step),
        None => {}
    }
    if let Some(refused) = error.downcast_ref::<BlockingRefused>() {
        return failed(Outcome::Trap, refused.to_string());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => failed(
            Outcome::OutOfFuel,
            format!("out of fuel in step {step}: the step did not return within its budget"),
        ),
        Some(Trap::StackOverflow) => failed(
            Outcome::StackOverflow,
            format!("stack overflow in step {step}"),
        ),
        Some(Trap::UnreachableCodeReached) => match capture.panic_message() {
            Some(message) => failed(Outcome::Panic, format!("guest panicked: {message}")),
            None => failed(Outcome::Trap, trap_message(error, step)),
        },
        _ => failed(Outcome::Trap, trap_message(error, step)),
    }
}

/// `trap in step N: <cause>`, then the wasm backtrace when wasmtime captured one.
fn trap_message(error: &wasmtime::Error, step: u32) -> String {
    let cause = error.root_cause();
    match error.downcast_ref::<WasmBacktrace>() {
        Some(backtrace) => format!("trap in step {step}: {cause}\n{backtrace}"),
        None => format!("trap in step {step}: {cause}"),
    }
}
