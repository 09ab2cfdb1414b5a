//! The empty task: starts, plans no step, and exits 0 on its first step. What it costs is the
//! sandbox's own cost per task, which the benchmarks measure.

use http_spawn_sdk::{Ctx, Exit};

async fn run(_: Ctx) -> Exit {
    Ok(0)
}

http_spawn_sdk::worker!(run);
