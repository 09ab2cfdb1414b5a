//! Hostile worker: panics in its first step. The host must record `panic` with the message.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Panic;

impl Guest for Panic {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        panic!("the worker gave up on purpose");
    }
}

export!(Panic);
