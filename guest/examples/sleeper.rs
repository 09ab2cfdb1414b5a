//! Hostile worker: blocks in a WASI sleep instead of asking the host to wake it. A blocking call
//! would hold a host scheduler thread, so the host must refuse it and record a trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Sleeper;

impl Guest for Sleeper {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(1)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Next::Done(0)
    }
}

export!(Sleeper);
