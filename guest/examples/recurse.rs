//! Hostile worker: recurses without end. The host must record `stack_overflow`.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Recurse;

fn dive(depth: u64) -> u64 {
    // The black boxes keep the optimiser from proving the exit unreachable or turning the call
    // into a loop; the exit never comes within any real stack.
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    std::hint::black_box(dive(depth + 1)) + 1
}

impl Guest for Recurse {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        Next::Done(dive(0) as i32)
    }
}

export!(Recurse);
