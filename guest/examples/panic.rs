//! Hostile worker: panics in its first step. The host must record `panic` with the message.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicBool, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Panic;

static GOOD_TASK: AtomicBool = AtomicBool::new(false);

impl Guest for Panic {
    fn start(spec: Spec) -> Result<u32, String> {
        GOOD_TASK.store(spec.name == knobs::GOOD, Ordering::Relaxed);
        Ok(1)
    }

    fn step() -> Next {
        if GOOD_TASK.load(Ordering::Relaxed) {
            return Next::Done(0);
        }
        panic!("the worker gave up on purpose");
    }
}

export!(Panic);
