//! Hostile worker: allocates a mebibyte at a time and never frees it. The host's memory cap must
//! stop it and record `memory_limit`, not a generic trap.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct MemBomb;

impl Guest for MemBomb {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

export!(MemBomb);
