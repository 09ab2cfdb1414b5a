//! Hostile worker: aborts without a panic message, which reaches the host as a bare trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicBool, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Abort;

static GOOD_TASK: AtomicBool = AtomicBool::new(false);

impl Guest for Abort {
    fn start(spec: Spec) -> Result<u32, String> {
        GOOD_TASK.store(spec.name == knobs::GOOD, Ordering::Relaxed);
        Ok(1)
    }

    fn step() -> Next {
        if GOOD_TASK.load(Ordering::Relaxed) {
            return Next::Done(0);
        }
        std::process::abort()
    }
}

export!(Abort);
