//! The naive embedding http-spawn is measured against: wasmtime's default configuration
//! (on-demand allocation, copy-on-write images, guard pages, signal-based traps), the worker
//! linked anew for every task (no `InstancePre`) and a WASI context built for every store, as a
//! first embedding written from wasmtime's examples would do. Fuel is on or off as asked, which
//! also makes it the fuel benchmark's baseline.

use std::path::Path;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ world: "worker", path: "../wit/v0.1" });

use exports::http_spawn::worker::task::{Next, Spec};

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

impl http_spawn::worker::host::Host for State {
    fn log(&mut self, _level: http_spawn::worker::host::Level, _message: String) {}
}

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
            pid: "bench".into(),
            name: "bench".into(),
            duration_secs: 0,
            payload: payload.map(str::to_owned),
        };
        task.call_start(&mut store, &spec)
            .map_err(wt)?
            .map_err(anyhow::Error::msg)?;
        loop {
            match task.call_step(&mut store).map_err(wt)? {
                Next::Sleep(_) => {}
                Next::Done(code) => return Ok(code),
                Next::Failed(message) => anyhow::bail!(message),
            }
        }
    }
}

/// wasmtime's own error type, as an anyhow error with its whole chain.
fn wt(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}
