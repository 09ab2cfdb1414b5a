//! The empty task: starts, plans no step, and exits 0 on its first step. What it costs is the
//! sandbox's own cost per task, which the benchmarks measure.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Empty;

impl Guest for Empty {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(0)
    }

    fn step() -> Next {
        Next::Done(0)
    }
}

export!(Empty);
