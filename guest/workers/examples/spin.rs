//! Hostile worker: its first step spins. With `{"iterations": N}` it stops after N rounds and
//! exits 0, which a big enough fuel budget allows; without, it never returns, and the host must
//! stop it when the step's fuel runs out and record `out_of_fuel` at step 0.

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};

fn iterations(spec: &Spec) -> Result<u64, String> {
    knobs::limit(spec, "iterations", 1, u64::MAX)
}

fn plan(spec: &Spec) -> Result<u32, String> {
    iterations(spec).map(|_| 0)
}

async fn run(ctx: Ctx) -> Exit {
    let limit = iterations(ctx.spec())?;
    let mut n: u64 = 0;
    while std::hint::black_box(n) < limit {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
