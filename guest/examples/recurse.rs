//! Hostile worker: recurses. With `{"depth": N}` it returns after N calls and exits 0; without,
//! it never stops, and the host must record `stack_overflow`.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicU64, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Recurse;

static DEPTH: AtomicU64 = AtomicU64::new(u64::MAX);

fn dive(depth: u64, limit: u64) -> u64 {
    // The black boxes keep the optimiser from turning the recursion into a loop.
    if std::hint::black_box(depth) >= limit {
        return 0;
    }
    std::hint::black_box(dive(depth + 1, limit)) + 1
}

impl Guest for Recurse {
    fn start(spec: Spec) -> Result<u32, String> {
        let depth = match knobs::number(spec.payload.as_deref(), "depth") {
            _ if spec.name == knobs::GOOD => 1,
            Some(n) => n,
            None => u64::MAX,
        };
        DEPTH.store(depth, Ordering::Relaxed);
        Ok(0)
    }

    fn step() -> Next {
        std::hint::black_box(dive(0, DEPTH.load(Ordering::Relaxed)));
        Next::Done(0)
    }
}

export!(Recurse);
