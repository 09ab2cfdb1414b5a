//! A worker that sleeps one short step and then exits with code 7.

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
    ctx.sleep(10).await;
    Ok(7)
}

http_spawn_sdk::worker!(run, plan = plan);
