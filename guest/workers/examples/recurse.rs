//! Hostile worker: recurses. With `{"depth": N}` it returns after N calls and exits 0; without,
//! it never stops, and the host must record `stack_overflow`.

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};

fn depth(spec: &Spec) -> Result<u64, String> {
    knobs::limit(spec, "depth", 1, u64::MAX)
}

fn dive(depth: u64, limit: u64) -> u64 {
    // The black boxes keep the optimiser from turning the recursion into a loop.
    if std::hint::black_box(depth) >= limit {
        return 0;
    }
    std::hint::black_box(dive(depth + 1, limit)) + 1
}

fn plan(spec: &Spec) -> Result<u32, String> {
    depth(spec).map(|_| 0)
}

async fn run(ctx: Ctx) -> Exit {
    std::hint::black_box(dive(0, depth(ctx.spec())?));
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
