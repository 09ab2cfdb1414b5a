//! A worker that writes far more than the host keeps: 256 KiB each to stdout and stderr, and
//! thousands of log lines. The host must cap the captured log and let the task exit 0.

#[path = "shared/knobs.rs"]
mod knobs;

use std::io::Write;

use http_spawn_sdk::{Ctx, Exit};

async fn run(ctx: Ctx) -> Exit {
    if knobs::is_good(ctx.spec()) {
        return Ok(0);
    }
    let line = [b'x'; 1023];
    for _ in 0..256 {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.write_all(b"\n");
        eprintln!("{}", "e".repeat(1023));
    }
    for i in 0..10_000 {
        ctx.debug(&format!("chatter {i}"));
    }
    println!("the end");
    Ok(0)
}

http_spawn_sdk::worker!(run);
