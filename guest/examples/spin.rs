//! Hostile worker: its first step never returns. The host must stop it when the step's fuel runs
//! out and record `out_of_fuel` at step 0.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Spin;

impl Guest for Spin {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(1)
    }

    fn step() -> Next {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Spin);
