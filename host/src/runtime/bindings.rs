//! The host side of the three worker contracts, generated: `wit/worker.wit`
//! (`http-spawn:worker@0.3.0`: results and calls) as [`v3`], `wit/v0.2/worker.wit` (`@0.2.0`,
//! the actor protocol) as [`v2`] and `wit/v0.1/worker.wit` (`@0.1.0`, sleep and finish only)
//! as [`v1`]. A module is checked against the newest first and runs on whichever it fits; all
//! link the same host, so their tasks live side by side.

pub mod v1 {
    wasmtime::component::bindgen!({ world: "worker", path: "../wit/v0.1" });
}

pub mod v2 {
    wasmtime::component::bindgen!({ world: "worker", path: "../wit/v0.2" });
}

pub mod v3 {
    wasmtime::component::bindgen!({ world: "worker", path: "../wit" });
}

/// The optional `checkpoint` interface of `wit/worker.wit`, looked up in a 0.3.0 worker that
/// exports it (the SDK's workers do): see `runtime/checkpoint.rs`.
pub mod checkpoint {
    wasmtime::component::bindgen!({ world: "checkpoint-only", path: "../wit" });
}
