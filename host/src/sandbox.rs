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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreContextMut, Trap, UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::cache::{Digest, ModuleCache};
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

/// Instances the pool holds beyond the host's capacity: room for a new module's smoke run
/// while every task place is taken. Loads are serialised, so one is enough.
const SPARE_INSTANCES: u32 = 1;

/// What a worker may import, by interface name without its version: the host's own interface,
/// and the WASI interfaces that Rust's `std` pulls in, all linked with nothing granted. Sockets
/// and everything else are refused before a module is published, not failed at run time.
const ALLOWED_IMPORTS: &[&str] = &[
    "http-spawn:worker/host",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The longest a module's smoke run may take, with epoch interruption on.
const SMOKE_RUN_DEADLINE: Duration = Duration::from_secs(5);

/// The pid and name a module's smoke run is started with.
const SMOKE_TASK_NAME: &str = "http-spawn-smoke-test";

/// Everything the sandbox needs to know to run tasks.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The largest memory cap of any worker: the size of every slot in the pool.
    pub max_memory_bytes: usize,
    /// Bytes of captured log kept per task.
    pub max_log_bytes: usize,
    /// Live instances the pooling allocator is sized for.
    pub capacity: u32,
    /// Whether running steps are checked every epoch tick for kills and deadlines. Without
    /// it a kill or a deadline takes effect when the step returns, at the latest when its fuel
    /// runs out; with it, within a tick, for some cost on loop-heavy guest code.
    pub epoch_interruption: bool,
    /// Where compiled modules are kept between runs; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

/// The limits one worker's tasks run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Fuel each call into the guest may burn: instantiation, `start`, and every `step`.
    pub fuel_per_step: u64,
    /// The most linear memory one task may hold, in bytes; at most the pool's slot size.
    pub max_memory_bytes: usize,
}

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the wasm engine could not be configured: {0}")]
    Engine(String),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// Why a module was refused as a worker. Nothing of a refused module is ever published.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a usable WebAssembly component: {0}")]
    NotComponent(String),
    #[error(
        "the component imports {import}, which workers may not use; a worker may import only \
         `http-spawn:worker/host` and WASI's cli, clocks, filesystem, io and random interfaces \
         (with nothing granted)"
    )]
    ForbiddenImport { import: String },
    #[error("the component does not validate or compile: {0}")]
    Invalid(String),
    #[error("the component needs more memory than the worker may have: {0}")]
    MemoryCap(String),
    #[error("the component does not fit the `worker` world of wit/worker.wit: {0}")]
    WrongWorld(String),
    #[error("the component failed its smoke run (instantiate and `start`): {0}")]
    SmokeFailed(String),
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
    /// The worker's name and the step running, for log lines.
    worker: Arc<str>,
    step: u32,
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
        let (pid, worker, step) = (self.pid, &*self.worker, self.step);
        // The host's own log gets the line on one line: a guest must not forge host lines.
        let line = one_line(&message);
        let source = match level {
            Level::Trace => {
                tracing::trace!(target: "guest", %pid, worker, step, "{line}");
                Source::Trace
            }
            Level::Debug => {
                tracing::debug!(target: "guest", %pid, worker, step, "{line}");
                Source::Debug
            }
            Level::Info => {
                tracing::info!(target: "guest", %pid, worker, step, "{line}");
                Source::Info
            }
            Level::Warn => {
                tracing::warn!(target: "guest", %pid, worker, step, "{line}");
                Source::Warn
            }
            Level::Error => {
                tracing::error!(target: "guest", %pid, worker, step, "{line}");
                Source::Error
            }
        };
        self.capture.line(source, message);
    }
}

/// `text` with control characters (newlines included) escaped; borrowed when there are none.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
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

/// The engine, the linker every worker goes through, and the compiled-module cache.
pub struct Sandbox {
    /// Keeps the epoch ticker alive; it stops once the sandbox is gone.
    _ticker: Arc<()>,
    engine: Engine,
    linker: Linker<TaskState>,
    cache: Option<ModuleCache>,
    config: SandboxConfig,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a loaded module's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Compiled by this process.
    Compiled,
    /// Loaded from the compiled-module cache: no compilation.
    Cache,
}

/// A worker component, compiled, checked against the `worker` world, smoke-run and pre-linked:
/// ready to be instantiated for any number of tasks.
pub struct Module {
    worker: Arc<str>,
    engine: Engine,
    pre: WorkerPre<TaskState>,
    limits: WorkerLimits,
    max_log_bytes: usize,
    digest: Digest,
    origin: Origin,
    size: usize,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("digest", &self.digest.short())
            .field("origin", &self.origin)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine with its pool, the linker and the epoch ticker, and opens the cache.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine_error = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let engine = Engine::new(&engine_config(&config)).map_err(engine_error)?;
        warm_up_pool(&engine, &config).map_err(engine_error)?;
        let linker = linker(&engine).map_err(engine_error)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ModuleCache::open(dir, &engine)?),
            None => None,
        };
        let ticker = Arc::new(());
        if config.epoch_interruption {
            start_epoch_ticker(engine.clone(), Arc::downgrade(&ticker))
                .map_err(|e| SandboxError::Engine(format!("starting the epoch ticker: {e}")))?;
        }
        Ok(Self {
            _ticker: ticker,
            engine,
            linker,
            cache,
            config,
        })
    }

    /// Turns the bytes of a component into a worker module, or says why it cannot be one: its
    /// imports held to [`ALLOWED_IMPORTS`], compiled (or taken from the cache), type-checked
    /// against the `worker` world, then instantiated and started once with `limits`. Slow (it
    /// may compile): call it off the async runtime.
    pub fn load(
        &self,
        worker: &Arc<str>,
        bytes: &[u8],
        limits: WorkerLimits,
    ) -> Result<Module, LoadError> {
        if limits.max_memory_bytes > self.config.max_memory_bytes {
            return Err(LoadError::MemoryCap(format!(
                "its memory cap of {} bytes is above the pool's slot size of {} bytes",
                limits.max_memory_bytes, self.config.max_memory_bytes
            )));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotComponent(
                "it does not start with the wasm magic number \\0asm".into(),
            ));
        }
        check_imports(bytes)?;
        let digest = Digest::of(bytes);
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, &digest));
        let (component, origin) = match cached {
            Some(component) => (component, Origin::Cache),
            None => {
                let component = Component::new(&self.engine, bytes).map_err(|e| {
                    let reason = format!("{e:#}");
                    if reason.contains("minimum byte size") {
                        LoadError::MemoryCap(format!(
                            "{reason}; raise the worker's max_memory (--max-memory)"
                        ))
                    } else {
                        LoadError::Invalid(reason)
                    }
                })?;
                (component, Origin::Compiled)
            }
        };
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld(format!("{e:#}"));
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = WorkerPre::new(pre).map_err(wrong_world)?;
        let module = Module {
            worker: Arc::clone(worker),
            engine: self.engine.clone(),
            pre,
            limits,
            max_log_bytes: self.config.max_log_bytes,
            digest,
            origin,
            size: bytes.len(),
        };
        module.smoke_run()?;
        if origin == Origin::Compiled
            && let Some(cache) = &self.cache
        {
            cache.store(&digest, &component);
        }
        Ok(module)
    }

    /// The pooling allocator's counts of slots in use and kept warm.
    pub fn pool_metrics(&self) -> Option<wasmtime::PoolingAllocatorMetrics> {
        self.engine.pooling_allocator_metrics()
    }

    /// Kernel memory mappings one live instance of `module` costs, measured: instantiates a
    /// few at once and counts `/proc/self/maps`. Rounded to the nearest whole mapping, so the
    /// odd mapping the allocator makes meanwhile is not charged to every task. 0 where the
    /// count cannot be read.
    pub fn mappings_per_instance(&self, module: &Module) -> u64 {
        let probes = PROBE_INSTANCES.min(self.config.capacity) as u64;
        let Some(before) = crate::capacity::map_count() else {
            return 0;
        };
        let live: Vec<_> = (0..probes)
            .filter_map(|seq| {
                module
                    .instantiate(Pid::new(0, seq), TaskLimits::unlimited())
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
}

/// Reads the component's own imports, before anything is compiled, and refuses a module that is
/// not a component or that imports anything beyond [`ALLOWED_IMPORTS`]. Imports of the modules
/// nested inside are the component's business: they can only be satisfied from within it.
fn check_imports(bytes: &[u8]) -> Result<(), LoadError> {
    use wasmparser::{Encoding, Parser, Payload};
    let malformed = |e: wasmparser::BinaryReaderError| LoadError::NotComponent(e.to_string());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(LoadError::NotComponent(
                    "this is a core wasm module; a worker is a component (build for \
                     wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
                        .into(),
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let name = import.map_err(malformed)?.name.name;
                    let interface = name
                        .split_once('@')
                        .map_or(name, |(interface, _)| interface);
                    if !ALLOWED_IMPORTS.contains(&interface) {
                        return Err(LoadError::ForbiddenImport {
                            import: name.to_owned(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
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

    /// Where a task's limits are set, and nowhere else: its memory cap and the fuel of its
    /// first call.
    fn new_store(&self, pid: Pid, limits: TaskLimits) -> Store<TaskState> {
        let state = TaskState {
            pid,
            worker: Arc::clone(&self.worker),
            step: 0,
            deadline: limits.deadline,
            kills: limits.kills,
            max_memory_bytes: self.limits.max_memory_bytes,
            capture: Capture::new(self.max_log_bytes),
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
        let budget = self.limits.fuel_per_step;
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

    /// Instantiates the module and calls `start` once, as for a task of duration 0, so a
    /// module that cannot even do that is refused before any task meets it.
    fn smoke_run(&self) -> Result<(), LoadError> {
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
            kills: Kills::default(),
        };
        let mut process = self.instantiate(pid, limits).map_err(refused)?;
        process
            .start(pid, SMOKE_TASK_NAME, 0, None)
            .map(drop)
            .map_err(refused)
    }
}

/// The tasks being killed, by pid sequence number: shared by the host (which adds a task when
/// it is asked to kill it) and the scheduler threads (which remove it when the task ends). It
/// is read at every spawn, every task end and every epoch tick of a running step, and nearly
/// always empty, so an empty set is answered from a counter without taking the lock.
#[derive(Debug, Clone, Default)]
pub struct Kills(Arc<KillSet>);

#[derive(Debug, Default)]
struct KillSet {
    pids: Mutex<HashSet<u64>>,
    /// `pids.len()`, written under the lock.
    len: AtomicUsize,
}

impl Kills {
    fn lock(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.0
            .pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn empty(&self) -> bool {
        self.0.len.load(Ordering::Acquire) == 0
    }

    /// Marks `pid` for killing.
    pub fn add(&self, pid: Pid) {
        let mut pids = self.lock();
        pids.insert(pid.seq());
        self.0.len.store(pids.len(), Ordering::Release);
    }

    /// Forgets `pid`, whose end is recorded.
    pub fn remove(&self, pid: Pid) {
        if self.empty() {
            return;
        }
        let mut pids = self.lock();
        pids.remove(&pid.seq());
        self.0.len.store(pids.len(), Ordering::Release);
    }

    /// Whether `pid` is marked for killing.
    pub fn contains(&self, pid: Pid) -> bool {
        !self.empty() && self.lock().contains(&pid.seq())
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
        self.store.data_mut().step = step;
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
    let capacity = config.capacity.max(1).saturating_add(SPARE_INSTANCES);
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
        .saturating_add(SPARE_INSTANCES)
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
