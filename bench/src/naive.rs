//! The naive embedding http-spawn is measured against: wasmtime's default configuration
//! (on-demand allocation, copy-on-write images, guard pages, signal-based traps), the worker
//! linked anew for every task (no `InstancePre`) and a WASI context built for every store, as a
//! first embedding written from wasmtime's examples would do. Fuel is on or off as asked, which
//! also makes it the fuel benchmark's baseline. It speaks the 0.3.0 contract the benchmarked
//! workers are built against, with the actor calls answered trivially: the workers it runs
//! (`empty`, `compute`, the default worker) only log.
//!
//! The same driver also runs a worker on the host's own engine built in another layout
//! ([`Naive::host_like`]), which section 4 uses to compare layouts the host does not run.

use std::path::Path;

use http_spawn_bench::procfs;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use ::http_spawn::EngineLayout;

wasmtime::component::bindgen!({ world: "worker", path: "../wit" });

use self::http_spawn::worker::types::{
    Child, Level, NameError, Pid, Reply, ReplyError, SendError, SpawnError, WatchError,
};
use exports::http_spawn::worker::task::{Next, Spec, Wake};

pub struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl self::http_spawn::worker::types::Host for State {}

/// A lone process: no other task exists, so sends find no one and spawns are refused.
impl self::http_spawn::worker::host::Host for State {
    fn log(&mut self, _level: Level, _message: String) {}

    fn self_pid(&mut self) -> Pid {
        PID.into()
    }

    fn send(&mut self, _to: Pid, _body: String) -> Result<(), SendError> {
        Err(SendError::NoSuchProcess)
    }

    fn spawn(&mut self, _child: Child) -> Result<Pid, SpawnError> {
        Err(SpawnError::Refused("the naive host runs one task".into()))
    }

    fn monitor(&mut self, _target: Pid) -> Result<(), WatchError> {
        Err(WatchError::BadPid)
    }

    fn link(&mut self, _target: Pid) -> Result<(), WatchError> {
        Err(WatchError::BadPid)
    }

    fn unlink(&mut self, _target: Pid) -> Result<(), WatchError> {
        Ok(())
    }

    fn kill(&mut self, _target: Pid) -> Result<(), SendError> {
        Err(SendError::NoSuchProcess)
    }

    fn trap_exits(&mut self, _on: bool) {}

    fn register(&mut self, _name: String) -> Result<(), NameError> {
        Ok(())
    }

    fn whereis(&mut self, _name: String) -> Option<Pid> {
        None
    }

    fn call(&mut self, _to: Pid, _body: String, _timeout_ms: u32) -> Result<u64, SendError> {
        Err(SendError::NoSuchProcess)
    }

    fn reply(&mut self, _reply_to: u64, _body: String) -> Result<(), ReplyError> {
        Err(ReplyError::NoSuchCall)
    }
}

/// The one task's pid.
const PID: &str = "00000000-1";

pub struct Naive {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    fuel: bool,
    /// Whether the engine interrupts running code every epoch tick, which every store must
    /// then answer (as the host's stores do, by carrying on).
    epochs: bool,
}

impl std::fmt::Debug for Naive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Naive")
            .field("fuel", &self.fuel)
            .field("epochs", &self.epochs)
            .finish()
    }
}

impl Naive {
    /// The worker `module` on wasmtime's default configuration, fuel on or off.
    pub fn new(module: &Path, fuel: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(fuel);
        Self::on_engine(module, &config, fuel, false)
    }

    /// The worker `module` on the host's engine (fuel and epochs on, a pool for `capacity`
    /// tasks of `max_memory_bytes`, warmed up as the host warms its own), laid out as `layout`.
    pub fn host_like(
        module: &Path,
        layout: EngineLayout,
        capacity: u32,
        max_memory_bytes: usize,
    ) -> anyhow::Result<Self> {
        let engine = ::http_spawn::bench_engine(layout, capacity, max_memory_bytes).map_err(wt)?;
        Self::on(module, engine, true, true)
    }

    fn on_engine(module: &Path, config: &Config, fuel: bool, epochs: bool) -> anyhow::Result<Self> {
        Self::on(module, Engine::new(config).map_err(wt)?, fuel, epochs)
    }

    fn on(module: &Path, engine: Engine, fuel: bool, epochs: bool) -> anyhow::Result<Self> {
        let component = Component::from_file(&engine, module).map_err(wt)?;
        let mut linker = Linker::new(&engine);
        Worker::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state).map_err(wt)?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wt)?;
        Ok(Self {
            engine,
            component,
            linker,
            fuel,
            epochs,
        })
    }

    /// A store for one task, with all the fuel it wants and, where the engine interrupts at
    /// epochs, a deadline every tick that lets it carry on.
    fn store(&self) -> anyhow::Result<Store<State>> {
        let state = State {
            ctx: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.fuel {
            store.set_fuel(u64::MAX).map_err(wt)?;
        }
        if self.epochs {
            // As the host does: its ticker ticks while guest code runs, and parks otherwise.
            ::http_spawn::bench_guest_runs();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| {
                ::http_spawn::bench_guest_runs();
                Ok(UpdateDeadline::Continue(1))
            });
        }
        Ok(store)
    }

    /// What live instances of the worker cost in kernel mappings: counts /proc/self/maps
    /// before `build` makes the engine, after, and with `live` instances held at once.
    pub fn mapping_cost(
        build: impl FnOnce() -> anyhow::Result<Self>,
        live: usize,
    ) -> anyhow::Result<MappingCost> {
        let maps = || procfs::Status::read().map(|status| status.maps as f64);
        let before_engine = maps()?;
        let naive = build()?;
        let before_instances = maps()?;
        let instances = (0..live)
            .map(|_| {
                let mut store = naive.store()?;
                let worker =
                    Worker::instantiate(&mut store, &naive.component, &naive.linker).map_err(wt)?;
                Ok((store, worker))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let with_instances = maps()?;
        drop(instances);
        let live = live as f64;
        Ok(MappingCost {
            per_live_instance: (with_instances - before_instances) / live,
            per_instance_in_all: (with_instances - before_engine) / live,
        })
    }

    /// Runs one task to its end, sleeping no time between steps; returns its exit code.
    pub fn run(&self, payload: Option<&str>) -> anyhow::Result<i32> {
        let mut store = self.store()?;
        let worker = Worker::instantiate(&mut store, &self.component, &self.linker).map_err(wt)?;
        let task = worker.http_spawn_worker_task();
        let spec = Spec {
            pid: PID.into(),
            name: "bench".into(),
            duration_secs: 0,
            payload: payload.map(str::to_owned),
            parent: None,
            attempt: 1,
        };
        task.call_start(&mut store, &spec)
            .map_err(wt)?
            .map_err(anyhow::Error::msg)?;
        let mut wake = Wake::Started;
        loop {
            wake = match task.call_step(&mut store, &wake).map_err(wt)? {
                Next::Sleep(_) => Wake::Slept,
                // No one can send to a lone task: its wait runs out at once.
                Next::Receive(_) => Wake::Timeout,
                // Nor answer a call: none is ever made.
                Next::Await(ticket) => Wake::Replied((ticket, Reply::Timeout)),
                Next::Done(done) => return Ok(done.exit_code),
                Next::Failed(message) => anyhow::bail!(message),
            };
        }
    }
}

/// Kernel memory mappings per live instance, counted two ways.
#[derive(Debug, Clone, Copy)]
pub struct MappingCost {
    /// Mappings that holding the instances added: what the host's start-up probe measures.
    pub per_live_instance: f64,
    /// Everything the engine added too, its pool laid out and warmed up, its compiled code and
    /// its epoch ticker's stack: a pool split into a mapping or two per slot pays up front,
    /// which the count per live instance does not see. A few mappings are the engine's own
    /// whatever the layout.
    pub per_instance_in_all: f64,
}

/// wasmtime's own error type, as an anyhow error with its whole chain.
fn wt(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}
