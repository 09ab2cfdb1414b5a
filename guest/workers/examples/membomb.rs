//! Hostile worker: allocates a mebibyte at a time and keeps it. With `{"mib": N}` it stops at
//! N MiB and exits 0; without, it never stops, and the host's memory cap must end it and record
//! `memory_limit`, not a generic trap.

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};

fn mib(spec: &Spec) -> Result<u64, String> {
    knobs::limit(spec, "mib", 0, u64::MAX)
}

fn plan(spec: &Spec) -> Result<u32, String> {
    mib(spec).map(|_| 0)
}

async fn run(ctx: Ctx) -> Exit {
    let limit = mib(ctx.spec())?;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    while (hoard.len() as u64) < limit {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
