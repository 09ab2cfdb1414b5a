//! Hostile worker: aborts without a panic message, which reaches the host as a bare trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Abort;

impl Guest for Abort {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        std::process::abort()
    }
}

export!(Abort);
