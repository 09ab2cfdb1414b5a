//! The naive embedding http-spawn is measured against: wasmtime's default configuration
//! (on-demand allocation, copy-on-write images, guard pages, signal-based traps), the worker
//! linked anew for every task (no `InstancePre`) and a WASI context built for every store, as a
//! first embedding written from wasmtime's examples would do. Fuel is on or off as asked, which
//! also makes it the fuel benchmark's baseline. It speaks the 0.2.0 contract the benchmarked
//! workers are built against, with the actor calls answered trivially: the workers it runs
//! (`empty`, `compute`, the default worker) only log.

use std::path::Path;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ world: "worker", path: "../wit" });

use self::http_spawn::worker::types::{
    Child, Level, NameError, Pid, SendError, SpawnError, WatchError,
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
}

/// The one task's pid.
const PID: &str = "00000000-1";

pub struct Naive {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    fuel: bool,
}

impl std::fmt::Debug for Naive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Naive").field("fuel", &self.fuel).finish()
    }
}

impl Naive {
    pub fn new(module: &Path, fuel: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(wt)?;
        let component = Component::from_file(&engine, module).map_err(wt)?;
        let mut linker = Linker::new(&engine);
        Worker::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state).map_err(wt)?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wt)?;
        Ok(Self {
            engine,
            component,
            linker,
            fuel,
        })
    }

    /// Runs one task to its end, sleeping no time between steps; returns its exit code.
    pub fn run(&self, payload: Option<&str>) -> anyhow::Result<i32> {
        let state = State {
            ctx: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.fuel {
            store.set_fuel(u64::MAX).map_err(wt)?;
        }
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
                Next::Done(code) => return Ok(code),
                Next::Failed(message) => anyhow::bail!(message),
            };
        }
    }
}

/// wasmtime's own error type, as an anyhow error with its whole chain.
fn wt(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}
