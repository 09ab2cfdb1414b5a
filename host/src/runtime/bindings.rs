//! The host side of the two worker contracts, generated: `wit/worker.wit`
//! (`http-spawn:worker@0.2.0`, the actor protocol) as [`v2`] and `wit/v0.1/worker.wit`
//! (`@0.1.0`, sleep and finish only) as [`v1`]. A module is checked against 0.2.0 first, then
//! 0.1.0, and runs on whichever it fits; both link the same host, so their tasks live side
//! by side.

pub mod v1 {
    wasmtime::component::bindgen!({ world: "worker", path: "../wit/v0.1" });
}

pub mod v2 {
    wasmtime::component::bindgen!({ world: "worker", path: "../wit" });
}
