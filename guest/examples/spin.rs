//! Hostile worker: its first step spins. With `{"iterations": N}` it stops after N rounds and
//! exits 0, which a big enough fuel budget allows; without, it never returns, and the host must
//! stop it when the step's fuel runs out and record `out_of_fuel` at step 0.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicU64, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Spin;

static ITERATIONS: AtomicU64 = AtomicU64::new(u64::MAX);

impl Guest for Spin {
    fn start(spec: Spec) -> Result<u32, String> {
        let iterations = match knobs::number(spec.payload.as_deref(), "iterations") {
            _ if spec.name == knobs::GOOD => 1,
            Some(n) => n,
            None => u64::MAX,
        };
        ITERATIONS.store(iterations, Ordering::Relaxed);
        Ok(0)
    }

    fn step() -> Next {
        let limit = ITERATIONS.load(Ordering::Relaxed);
        let mut n: u64 = 0;
        while std::hint::black_box(n) < limit {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        Next::Done(0)
    }
}

export!(Spin);
