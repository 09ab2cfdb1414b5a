//! A worker that sleeps one short step and then exits with code 7.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use std::sync::atomic::{AtomicBool, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Exit7;

static SLEPT: AtomicBool = AtomicBool::new(false);

impl Guest for Exit7 {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        if SLEPT.swap(true, Ordering::Relaxed) {
            Next::Done(7)
        } else {
            Next::Sleep(10)
        }
    }
}

export!(Exit7);
