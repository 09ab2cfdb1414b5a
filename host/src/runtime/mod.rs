//! The runtime: everything that touches wasmtime, and nothing else does. One `Engine` with its
//! pooling allocator ([`engine`]), what a guest may import and the linker it goes through
//! ([`policy`]), worker components compiled once and pre-linked ([`module`]), and one task's
//! store and calls ([`process`]), whose limits are all set in one place, `Module::new_store`.
//!
//! A guest reaches only what is linked here: the `host` interface of `wit/worker.wit`, and WASI
//! with nothing granted (no preopened directories, no environment, no arguments, no sockets,
//! stdin empty, stdout and stderr captured). The WASI context is built the first time a guest
//! touches WASI, so a worker that never does pays nothing for it.

mod bindings;
pub(crate) mod cache;
mod calls;
mod capture;
mod checkpoint;
mod contract;
mod embedded;
mod engine;
mod interrupt;
mod module;
mod policy;
mod process;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use cache::{CacheError, Digest};
pub(crate) use calls::answer as answer_now;
#[doc(hidden)]
pub use checkpoint::{CheckpointFigures, bench_checkpoints};
pub use checkpoint::{Image, Refused};
pub use embedded::{Embedded, EmbeddedConfig, EmbeddedError};
pub use interrupt::Interrupts;
pub use module::{Module, Origin};
pub use process::{Next, Process, StartSpec, TaskLimits};

use crate::model::Pid;
use cache::ModuleCache;
use process::TaskState;

pub use engine::EngineLayout;

/// For a driver of [`bench_engine`]'s engines: a guest call begins, or a running one saw an
/// epoch tick, so the process's epoch ticker keeps ticking (parked, it would stop the epochs
/// the engine is measured with). The host's own calls say so as they refuel.
#[doc(hidden)]
pub fn bench_guest_runs() {
    engine::busy();
}

/// The host's engine as [`Sandbox::new`] builds it, laid out as `layout`, for `capacity` tasks
/// of at most `max_memory_bytes` each, fuel and epochs on: its pool warmed up and its epoch
/// ticker started. For `make bench`, which measures what the host's layout costs against the
/// others (section 4); the host itself always runs [`EngineLayout::Host`].
#[doc(hidden)]
pub fn bench_engine(
    layout: EngineLayout,
    capacity: u32,
    max_memory_bytes: usize,
) -> wasmtime::Result<Engine> {
    let config = SandboxConfig {
        max_memory_bytes,
        max_log_bytes: 0,
        max_sends_per_step: 0,
        max_result_bytes: 0,
        capacity,
        epoch_interruption: true,
        cache_dir: None,
    };
    let engine = Engine::new(&engine::laid_out(&config, layout))?;
    engine::warm_up_pool(&engine, &config)?;
    engine::Ticker::tick_global(&engine)?;
    Ok(engine)
}

/// Instances the start-up probe keeps live at once to measure their cost in kernel mappings.
const PROBE_INSTANCES: u32 = 64;

/// Everything the sandbox needs to know to run tasks.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The largest memory cap of any worker: the size of every slot in the pool.
    pub max_memory_bytes: usize,
    /// Bytes of captured log kept per task.
    pub max_log_bytes: usize,
    /// Messages a task may send in one step; past it a send is refused as to a full mailbox.
    pub max_sends_per_step: u32,
    /// The largest result a task may return; past it, it fails (`result_too_large`).
    pub max_result_bytes: usize,
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
    Cache(#[from] CacheError),
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
    #[error(
        "the component fits no `worker` world: http-spawn:worker@0.3.0 (wit/worker.wit), \
         @0.2.0 (wit/v0.2/worker.wit) or @0.1.0 (wit/v0.1/worker.wit): {0}"
    )]
    WrongWorld(String),
    #[error("the component failed its smoke run (instantiate and `start`): {0}")]
    SmokeFailed(String),
}

/// The engine, the linker every worker goes through, and the compiled-module cache.
pub struct Sandbox {
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

impl Sandbox {
    /// Builds the engine with its pool, the linker and the epoch ticker, and opens the cache.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine_error = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let engine = Engine::new(&engine::engine_config(&config)).map_err(engine_error)?;
        engine::warm_up_pool(&engine, &config).map_err(engine_error)?;
        let linker = policy::linker(&engine).map_err(engine_error)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ModuleCache::open(dir, &engine)?),
            None => None,
        };
        if config.epoch_interruption {
            engine::Ticker::tick_global(&engine)
                .map_err(|e| SandboxError::Engine(format!("starting the epoch ticker: {e}")))?;
        }
        Ok(Self {
            engine,
            linker,
            cache,
            config,
        })
    }

    /// Turns the bytes of a component into a worker module, or says why it cannot be one: its
    /// imports held to the allow-list of `policy`, compiled (or taken from the cache), type-checked
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
        policy::check_imports(bytes)?;
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
        // The newest contract first; a component that fits none is told why it does not fit
        // the newest.
        let pre = match bindings::v3::WorkerIndices::new(&pre) {
            Ok(indices) => module::Pre::V3 {
                checkpoint: bindings::checkpoint::CheckpointOnlyIndices::new(&pre)
                    .ok()
                    .map(checkpoint::Support::new),
                pre,
                indices,
            },
            Err(newest) => match bindings::v2::WorkerPre::new(pre.clone()) {
                Ok(pre) => module::Pre::V2(pre),
                Err(_) => match bindings::v1::WorkerPre::new(pre) {
                    Ok(pre) => module::Pre::V1(pre),
                    Err(_) => return Err(wrong_world(newest)),
                },
            },
        };
        let module = Module {
            worker: Arc::clone(worker),
            engine: self.engine.clone(),
            pre,
            limits,
            max_log_bytes: self.config.max_log_bytes,
            max_sends_per_step: self.config.max_sends_per_step,
            max_result_bytes: self.config.max_result_bytes,
            digest,
            origin,
            size: bytes.len(),
        };
        module.smoke_run()?;
        module.learn_pristine();
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
        let Some(before) = crate::sys::map_count() else {
            return 0;
        };
        let live: Vec<_> = (0..probes)
            .filter_map(|seq| {
                module
                    .instantiate(Pid::new(0, seq), TaskLimits::unlimited())
                    .ok()
            })
            .collect();
        let after = crate::sys::map_count().unwrap_or(before);
        let measured = live.len() as u64;
        drop(live);
        if measured == 0 {
            return 0;
        }
        (after.saturating_sub(before) + measured / 2) / measured
    }
}
