//! A worker that sleeps one short step and then exits with code 7.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicBool, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Exit7;

static SLEPT: AtomicBool = AtomicBool::new(false);

impl Guest for Exit7 {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(1)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        if SLEPT.swap(true, Ordering::Relaxed) {
            Next::Done(7)
        } else {
            Next::Sleep(10)
        }
    }
}

export!(Exit7);
