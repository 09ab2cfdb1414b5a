//! Hostile worker: aborts without a panic message, which reaches the host as a bare trap.

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};

fn plan(_: &Spec) -> Result<u32, String> {
    Ok(1)
}

async fn run(ctx: Ctx) -> Exit {
    if knobs::is_good(ctx.spec()) {
        return Ok(0);
    }
    std::process::abort()
}

http_spawn_sdk::worker!(run, plan = plan);
