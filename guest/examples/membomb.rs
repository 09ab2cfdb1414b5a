//! Hostile worker: allocates a mebibyte at a time and keeps it. With `{"mib": N}` it stops at
//! N MiB and exits 0; without, it never stops, and the host's memory cap must end it and record
//! `memory_limit`, not a generic trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicU64, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct MemBomb;

static MIB: AtomicU64 = AtomicU64::new(u64::MAX);

impl Guest for MemBomb {
    fn start(spec: Spec) -> Result<u32, String> {
        let mib = match knobs::number(spec.payload.as_deref(), "mib") {
            _ if spec.name == knobs::GOOD => 0,
            Some(n) => n,
            None => u64::MAX,
        };
        MIB.store(mib, Ordering::Relaxed);
        Ok(0)
    }

    fn step() -> Next {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        while (hoard.len() as u64) < MIB.load(Ordering::Relaxed) {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
        Next::Done(0)
    }
}

export!(MemBomb);
