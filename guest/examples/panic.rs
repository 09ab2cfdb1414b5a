//! Hostile worker: panics in its first step. The host must record `panic` with the message.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Panic;

impl Guest for Panic {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(1)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        panic!("the worker gave up on purpose");
    }
}

export!(Panic);
