//! Hostile worker: aborts without a panic message, which reaches the host as a bare trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Abort;

impl Guest for Abort {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(1)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        std::process::abort()
    }
}

export!(Abort);
