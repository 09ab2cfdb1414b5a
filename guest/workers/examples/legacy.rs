//! A worker built against the 0.1.0 contract (`wit/v0.1/worker.wit`), with its own bindings
//! rather than the SDK: it sleeps `duration` one-second steps, logs "legacy worker finished"
//! and exits 0. The host must keep running such workers beside 0.2.0 ones.

wit_bindgen::generate!({ world: "worker", path: "../../wit/v0.1" });

use std::sync::atomic::{AtomicU32, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};
use http_spawn::worker::host::{Level, log};

/// One step a second, as the default worker of 0.1.0 took them.
const STEP_MS: u32 = 1_000;

/// Steps still to sleep. A component instance runs one thread; the atomic only says so.
static LEFT: AtomicU32 = AtomicU32::new(0);

struct Legacy;

impl Guest for Legacy {
    fn start(spec: Spec) -> Result<u32, String> {
        LEFT.store(spec.duration_secs, Ordering::Relaxed);
        Ok(spec.duration_secs)
    }

    fn step() -> Next {
        let left = LEFT.load(Ordering::Relaxed);
        if left == 0 {
            log(Level::Info, "legacy worker finished");
            return Next::Done(0);
        }
        LEFT.store(left - 1, Ordering::Relaxed);
        Next::Sleep(STEP_MS)
    }
}

export!(Legacy);
