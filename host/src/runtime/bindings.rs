//! The host side of `wit/worker.wit`, generated: the `worker` world's exports (`start`, `step`)
//! as [`Worker`] and [`WorkerPre`], and the `host` interface a guest imports, as a trait.

wasmtime::component::bindgen!({ world: "worker", path: "../wit" });
