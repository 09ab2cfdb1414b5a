//! Hostile worker: panics in its first step. The host must record `panic` with the message.

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
    panic!("the worker gave up on purpose");
}

http_spawn_sdk::worker!(run, plan = plan);
