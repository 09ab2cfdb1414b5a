//! The default http-spawn worker: it "works" on a named job for `duration` seconds, one step a
//! second, logging its progress, and exits 0. It is the WebAssembly counterpart of the Lua
//! worker in Wippy's `http-spawn` example, and reads like it:
//!
//! ```lua
//! log "Worker started" with steps
//! for i = 1, steps do time.sleep 1s; log "Worker progress" with step i and total end
//! log "Worker done, exiting"
//! ```
//!
//! The optional JSON payload may carry `{"exit_code": N}` to end with code N instead of 0, which
//! is handy to see failure paths with the default worker.
//!
//! On wasm it is `no_std` on `http-spawn-sdk`'s allocator: the component imports no WASI at
//! all, and declares one page of linear memory (see `build.rs`). Log lines are built with
//! `push_str` and `text::push_u32`, not `format!`, whose machinery would sit in every instance's
//! memory.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;

use http_spawn_sdk::{Ctx, Exit, Spec, payload, text};

/// One step a second, as in the seed's Lua worker.
const STEP_MS: u32 = 1_000;

/// The exit code the payload asks for, 0 by default.
fn exit_code(spec: &Spec) -> Result<i32, String> {
    match payload::int(spec.payload.as_deref(), "exit_code") {
        Ok(None) => Ok(0),
        Ok(Some(code)) => {
            i32::try_from(code).map_err(|_| String::from("exit_code must fit a 32-bit integer"))
        }
        Err(_) => Err(String::from("exit_code must be an integer")),
    }
}

/// One step per second of the duration; a bad `exit_code` fails the task before it starts.
fn plan(spec: &Spec) -> Result<u32, String> {
    exit_code(spec)?;
    Ok(spec.duration_secs)
}

async fn run(ctx: Ctx) -> Exit {
    let exit_code = exit_code(ctx.spec())?;
    let steps = ctx.spec().duration_secs;

    {
        let mut line = String::from("Worker started steps=");
        text::push_u32(&mut line, steps);
        ctx.info(&line);
    }

    for step in 1..=steps {
        ctx.sleep(STEP_MS).await;
        let mut line = String::from("Worker progress step=");
        text::push_u32(&mut line, step);
        line.push_str(" total=");
        text::push_u32(&mut line, steps);
        ctx.info(&line);
    }

    ctx.info("Worker done, exiting");
    Ok(exit_code)
}

http_spawn_sdk::worker!(run, plan = plan);
