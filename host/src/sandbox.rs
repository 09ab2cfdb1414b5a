//! The sandbox: one wasmtime `Engine`, the worker component compiled once and pre-linked
//! (`InstancePre`), and a fresh `Store` per task, built with all of its limits in
//! [`Sandbox::new_store`] and dropped when the task ends.
//!
//! A guest reaches only what is linked here: the `host` interface of `wit/worker.wit`, and WASI
//! with nothing granted (no preopened directories, no environment, no arguments, no sockets,
//! stdin empty, stdout and stderr captured). The WASI context is built the first time a guest
//! touches WASI, so a worker that never does pays nothing for it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreContextMut, Trap, UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capture::{Capture, Source};
use crate::config::WASM_PAGE_BYTES;
use crate::table::{Outcome, Pid, Status, TaskEnd};

wasmtime::component::bindgen!({ world: "worker", path: "../wit" });

pub use exports::http_spawn::worker::task::Next;
use exports::http_spawn::worker::task::Spec;
use http_spawn::worker::host::Level;

/// Core instances of a worker: a Rust `wasm32-wasip2` component holds three (its module, the
/// WASI adapter and a shim); one more for other toolchains. Instances are only counted by the
/// pool, not reserved, so headroom here is free.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// Linear memories of a worker. Every memory slot costs address space and, once used, kernel
/// mappings, so a worker gets one; a component with more fails to instantiate, recorded.
const MAX_MEMORIES_PER_COMPONENT: u32 = 1;
/// Tables of a worker: its function table and the shim's.
const MAX_TABLES_PER_COMPONENT: u32 = 2;
/// Elements per table; a Rust worker's function table holds a few hundred.
const MAX_TABLE_ELEMENTS: usize = 4096;

/// Bytes of a freed memory or table slot reset in place rather than returned to the kernel.
const KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// Instances the start-up probe keeps live at once to measure their cost in kernel mappings.
const PROBE_INSTANCES: u32 = 64;

/// The WASI version whose `poll` the sandbox refuses; it must match wasmtime-wasi's own.
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Everything the sandbox needs to know to run tasks.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The worker component (`.wasm`).
    pub module: PathBuf,
    /// Fuel each call into the guest may burn: instantiation, `start`, and every `step`.
    pub fuel_per_step: u64,
    /// The most linear memory one task may hold, in bytes.
    pub max_memory_bytes: usize,
    /// Bytes of captured log kept per task.
    pub max_log_bytes: usize,
    /// Live instances the pooling allocator is sized for.
    pub capacity: u32,
    /// Whether running steps are checked every epoch tick for kills and deadlines. Without
    /// it a kill or a deadline takes effect when the step returns, at the latest when its fuel
    /// runs out; with it, within a tick, for some cost on loop-heavy guest code.
    pub epoch_interruption: bool,
}

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot read the worker module {path} ({source}); `make build-guest` builds the default one"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the worker module {path} is not a usable component: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("the worker module {path} cannot be instantiated: {reason}")]
    Instantiate { path: PathBuf, reason: String },
    #[error("the wasm engine could not be configured: {0}")]
    Engine(String),
}

/// The guest grew its memory past the task's cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest asked for {desired} bytes, the cap is {max} bytes")]
struct MemoryLimitExceeded {
    desired: usize,
    max: usize,
}

/// Why the host stopped a running call.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("killed")]
    Killed,
    #[error("deadline exceeded while a step ran")]
    Deadline,
}

/// The guest tried to block inside WASI, which would hold a host thread.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest tried to block in {WASI_IO_POLL} (a sleep or a wait); a worker waits by returning \
     `next::sleep` from `step`"
)]
struct BlockingRefused;

/// The data of one task's store.
pub struct TaskState {
    pid: Pid,
    /// When the task's wall-clock limit runs out.
    deadline: Instant,
    /// Sequence numbers of tasks being killed; read at every epoch tick while a step runs, so a
    /// compute-bound step is stopped within a tick.
    kills: Kills,
    max_memory_bytes: usize,
    capture: Capture,
    /// Built on first use: most workers never touch WASI.
    wasi: Option<Box<WasiState>>,
}

struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
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

impl http_spawn::worker::host::Host for TaskState {
    fn log(&mut self, level: Level, message: String) {
        let pid = tracing::field::display(self.pid);
        let source = match level {
            Level::Trace => {
                tracing::trace!(target: "guest", pid = %pid, "{message}");
                Source::Trace
            }
            Level::Debug => {
                tracing::debug!(target: "guest", pid = %pid, "{message}");
                Source::Debug
            }
            Level::Info => {
                tracing::info!(target: "guest", pid = %pid, "{message}");
                Source::Info
            }
            Level::Warn => {
                tracing::warn!(target: "guest", pid = %pid, "{message}");
                Source::Warn
            }
            Level::Error => {
                tracing::error!(target: "guest", pid = %pid, "{message}");
                Source::Error
            }
        };
        self.capture.line(source, message);
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

/// How often the engine's epoch advances: the latency of a kill or a deadline for a running
/// step, and the interval at which a running step's limits are checked.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The engine and the compiled, pre-linked worker.
pub struct Sandbox {
    /// Keeps the epoch ticker alive; it stops once the sandbox is gone.
    _ticker: Arc<()>,
    engine: Engine,
    pre: WorkerPre<TaskState>,
    config: SandboxConfig,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine, compiles the worker and links it. Fails if the module is missing,
    /// is not a component of the `worker` world, or imports anything the host does not offer.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let bytes = std::fs::read(&config.module).map_err(|source| SandboxError::Read {
            path: config.module.clone(),
            source,
        })?;
        let compile_error = |e: wasmtime::Error| {
            let mut reason = format!("{e:#}");
            if reason.contains("minimum byte size") {
                reason.push_str("; raise --max-memory");
            }
            SandboxError::Compile {
                path: config.module.clone(),
                reason,
            }
        };
        warm_up_pool(&engine, &config).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let component = Component::new(&engine, &bytes).map_err(compile_error)?;
        let linker = linker(&engine).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(compile_error)?;
        let pre = WorkerPre::new(pre).map_err(compile_error)?;
        let ticker = Arc::new(());
        if config.epoch_interruption {
            start_epoch_ticker(engine.clone(), Arc::downgrade(&ticker))
                .map_err(|e| SandboxError::Engine(format!("starting the epoch ticker: {e}")))?;
        }
        let sandbox = Self {
            _ticker: ticker,
            engine,
            pre,
            config,
        };
        // Fail at start, not on every task, when the worker cannot even be instantiated: most
        // often a memory it declares larger than the cap.
        if let Err(end) = sandbox.instantiate(Pid::new(0, 0), TaskLimits::unlimited()) {
            let reason = end.error.unwrap_or_default();
            let hint = if end.outcome == Outcome::MemoryLimit {
                "; raise --max-memory"
            } else {
                ""
            };
            return Err(SandboxError::Instantiate {
                path: sandbox.config.module.clone(),
                reason: format!("{reason}{hint}"),
            });
        }
        Ok(sandbox)
    }

    /// Kernel memory mappings one live instance of the worker costs, measured: instantiates a
    /// few at once and counts `/proc/self/maps`. Rounded to the nearest whole mapping, so the
    /// odd mapping the allocator makes meanwhile is not charged to every task. 0 where the
    /// count cannot be read.
    pub fn mappings_per_instance(&self) -> u64 {
        let probes = PROBE_INSTANCES.min(self.config.capacity) as u64;
        let Some(before) = crate::capacity::map_count() else {
            return 0;
        };
        let live: Vec<_> = (0..probes)
            .filter_map(|seq| {
                self.instantiate(Pid::new(0, seq), TaskLimits::unlimited())
                    .ok()
            })
            .collect();
        let after = crate::capacity::map_count().unwrap_or(before);
        let measured = live.len() as u64;
        drop(live);
        if measured == 0 {
            return 0;
        }
        (after.saturating_sub(before) + measured / 2) / measured
    }

    /// Where a task's limits are set, and nowhere else: its memory cap and the fuel of its
    /// first call.
    fn new_store(&self, pid: Pid, limits: TaskLimits) -> Store<TaskState> {
        let state = TaskState {
            pid,
            deadline: limits.deadline,
            kills: limits.kills,
            max_memory_bytes: self.config.max_memory_bytes,
            capture: Capture::new(self.config.max_log_bytes),
            wasi: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.epoch_deadline_callback(on_epoch_tick);
        store
    }

    /// Instantiates the worker for one task, in a store of its own.
    pub fn instantiate(&self, pid: Pid, limits: TaskLimits) -> Result<Process, TaskEnd> {
        let mut store = self.new_store(pid, limits);
        let budget = self.config.fuel_per_step;
        refuel(&mut store, budget);
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => {
                let fuel = spent(&store, budget);
                Ok(Process {
                    store,
                    bindings,
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
}

/// The tasks being killed, by pid sequence number: shared by the host (which adds a task when
/// it is asked to kill it) and the scheduler threads (which remove it when the task ends).
#[derive(Debug, Clone, Default)]
pub struct Kills(Arc<Mutex<HashSet<u64>>>);

impl Kills {
    fn lock(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `pid` for killing.
    pub fn add(&self, pid: Pid) {
        self.lock().insert(pid.seq());
    }

    /// Forgets `pid`, whose end is recorded.
    pub fn remove(&self, pid: Pid) {
        self.lock().remove(&pid.seq());
    }

    fn contains(&self, pid: Pid) -> bool {
        self.lock().contains(&pid.seq())
    }
}

/// The per-task limits that are not the sandbox's: when the task must end, and where kills
/// are posted.
#[derive(Debug, Clone)]
pub struct TaskLimits {
    pub deadline: Instant,
    pub kills: Kills,
}

impl TaskLimits {
    /// No deadline to speak of and no kill: for probes and benchmarks.
    pub fn unlimited() -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(86_400 * 365),
            kills: Kills::default(),
        }
    }
}

/// One task's instance: its store, and the handles to call it.
pub struct Process {
    store: Store<TaskState>,
    bindings: Worker,
    budget: u64,
    fuel: u64,
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
    pub fn start(
        &mut self,
        pid: Pid,
        name: &str,
        duration_secs: u32,
        payload: Option<&str>,
    ) -> Result<u32, TaskEnd> {
        let spec = Spec {
            pid: pid.to_string(),
            name: name.to_owned(),
            duration_secs,
            payload: payload.map(str::to_owned),
        };
        refuel(&mut self.store, self.budget);
        let result = self
            .bindings
            .http_spawn_worker_task()
            .call_start(&mut self.store, &spec);
        self.fuel += spent(&self.store, self.budget);
        match result {
            Ok(Ok(steps)) => Ok(steps),
            Ok(Err(message)) => Err(TaskEnd {
                status: Status::Failed,
                outcome: Outcome::GuestError,
                exit_code: None,
                error: Some(format!("start failed: {message}")),
            }),
            Err(error) => Err(classify(&error, &self.store.data().capture, 0)),
        }
    }

    /// Runs one step with a fresh fuel budget. `step` is the number of steps completed so far,
    /// reported if this one fails.
    pub fn step(&mut self, step: u32) -> Result<Next, TaskEnd> {
        refuel(&mut self.store, self.budget);
        let result = self
            .bindings
            .http_spawn_worker_task()
            .call_step(&mut self.store);
        self.fuel += spent(&self.store, self.budget);
        result.map_err(|error| classify(&error, &self.store.data().capture, step))
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

/// Advances the engine's epoch every tick while the sandbox lives.
fn start_epoch_ticker(engine: Engine, alive: Weak<()>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

/// Prepares the store for a call into the guest: a fresh fuel budget, and an epoch deadline one
/// tick away so that kills and the wall-clock limit are checked while the call runs.
fn refuel(store: &mut Store<TaskState>, budget: u64) {
    // Fuel is enabled on every engine this module builds, so this cannot fail.
    let _ = store.set_fuel(budget);
    store.set_epoch_deadline(1);
}

/// Called at every epoch tick while a task's guest code runs.
fn on_epoch_tick(store: StoreContextMut<'_, TaskState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    if state.kills.contains(state.pid) {
        return Err(Interrupted::Killed.into());
    }
    if Instant::now() >= state.deadline {
        return Err(Interrupted::Deadline.into());
    }
    Ok(UpdateDeadline::Continue(1))
}

fn spent(store: &Store<TaskState>, budget: u64) -> u64 {
    budget.saturating_sub(store.get_fuel().unwrap_or(0))
}

/// Turns a failed call into a recorded end: what kind of failure, and a message for people.
fn classify(error: &wasmtime::Error, capture: &Capture, step: u32) -> TaskEnd {
    let failed = |outcome, message: String| TaskEnd {
        status: Status::Failed,
        outcome,
        exit_code: None,
        error: Some(message),
    };
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return failed(Outcome::MemoryLimit, limit.to_string());
    }
    match error.downcast_ref::<Interrupted>() {
        Some(Interrupted::Killed) => return killed(),
        Some(Interrupted::Deadline) => return deadline_exceeded(step),
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

/// The end of a killed task.
pub fn killed() -> TaskEnd {
    TaskEnd {
        status: Status::Killed,
        outcome: Outcome::Killed,
        exit_code: None,
        error: Some("killed".into()),
    }
}

/// The end of a task past its wall-clock limit, during or between steps.
pub fn deadline_exceeded(step: u32) -> TaskEnd {
    TaskEnd {
        status: Status::Failed,
        outcome: Outcome::DeadlineExceeded,
        exit_code: None,
        error: Some(format!("deadline exceeded at step {step}")),
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

/// The engine configuration: fuel metering, and a pooling allocator sized for `capacity` live
/// instances whose memory slots are exactly the task memory cap.
///
/// The pool is laid out so that a live task costs the kernel no memory mapping of its own, which
/// is what lets one host keep 100,000 tasks under the default `vm.max_map_count` of 65530:
/// - no guard regions and no copy-on-write images, so a slot is one anonymous range;
/// - no signals-based traps, so wasmtime checks every bounds explicitly and never turns the
///   unused end of a slot back to `PROT_NONE`; with [`warm_up_pool`] every slot is then
///   read-write end to end and the whole pool stays a single mapping.
///
/// The price: explicit bounds checks on every memory access (about what guard-less slots cost
/// anyway), no guard pages between neighbouring tasks' memories, and Cranelift's Spectre
/// mitigations for heap and table accesses off, which wasmtime requires without signal
/// handlers. Isolation rests on the bounds checks, which wasmtime emits for every access.
fn engine_config(config: &SandboxConfig) -> Config {
    let capacity = config.capacity.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(capacity)
        .total_core_instances(capacity.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(capacity.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .total_tables(capacity.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(config.max_memory_bytes)
        // Tasks never run on fibers (every call is synchronous), so the pool needs no async
        // stacks; its default of 1,000 would cost two mappings and 2 MiB of address each.
        .total_stacks(0)
        // A freed slot's pages are reset in place (only the dirty ones, found with the
        // PAGEMAP_SCAN ioctl where the kernel has it) instead of being handed back with
        // madvise: no page faults for the next task, and no TLB shootdown across the
        // scheduler threads, which dominated the cost of a short task.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut engine = Config::new();
    engine
        .wasm_component_model(true)
        .consume_fuel(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_reservation(config.max_memory_bytes as u64)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .guard_before_linear_memory(false)
        .memory_may_move(false)
        .memory_init_cow(false)
        .signals_based_traps(false)
        .epoch_interruption(config.epoch_interruption);
    engine
}

/// Makes every memory slot of the pool read-write end to end, once, at start: it instantiates
/// a memory of the full cap in every slot at the same time, then drops them. Slots never lose
/// that protection afterwards (see [`engine_config`]), so neighbouring slots stay one mapping
/// however tasks come and go. Costs well under a second for 100,000 slots.
fn warm_up_pool(engine: &Engine, config: &SandboxConfig) -> wasmtime::Result<()> {
    let slots = config
        .capacity
        .max(1)
        .saturating_mul(MAX_MEMORIES_PER_COMPONENT) as usize;
    let pages = config.max_memory_bytes as u64 / WASM_PAGE_BYTES;
    let module = wasmtime::Module::new(engine, memory_only_module(pages))?;
    let mut store = Store::new(
        engine,
        wasmtime::StoreLimitsBuilder::new()
            .instances(slots)
            .memories(slots)
            .build(),
    );
    store.limiter(|limits| limits);
    // Fuel is on engine-wide; instantiating a module without a start function burns none.
    refuel_any(&mut store);
    for _ in 0..slots {
        wasmtime::Instance::new(&mut store, &module, &[])?;
    }
    drop(store);
    release_freed_heap();
    Ok(())
}

/// Gives the heap the warm-up freed (about a kilobyte per slot) back to the kernel, which
/// glibc's allocator would otherwise keep for the life of the process.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes no
    // pointers and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The binary of `(module (memory <pages>))`.
fn memory_only_module(pages: u64) -> Vec<u8> {
    let mut min = Vec::new();
    let mut rest = pages;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            min.push(byte);
            break;
        }
        min.push(byte | 0x80);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Memory section: one memory, limits with a minimum only.
    module.push(5);
    module.push((2 + min.len()) as u8);
    module.extend([1, 0]);
    module.extend(min);
    module
}

fn refuel_any<T>(store: &mut Store<T>) {
    let _ = store.set_fuel(u64::MAX);
    store.set_epoch_deadline(u64::MAX / 2);
}

/// The linker every worker is instantiated through: the `host` interface and WASI with nothing
/// granted, and blocking polls refused.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut linker = Linker::new(engine);
    Worker::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)?;
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // A blocking poll would hold a scheduler thread (and every task on it) for as long as the
    // guest liked. Replace both ways to block with a trap that says what to do instead.
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(BlockingRefused.into())
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> { Err(BlockingRefused.into()) },
    )?;
    Ok(linker)
}
