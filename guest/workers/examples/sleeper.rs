//! Hostile worker: blocks in a WASI sleep instead of asking the host to wake it (`ctx.sleep`). A
//! blocking call would hold a host scheduler thread, so the host must refuse it and record a
//! trap.

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
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
