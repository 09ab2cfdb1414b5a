//! The default http-spawn worker: it "works" on a named job for `duration` seconds, one step a
//! second, and exits 0. It is the WebAssembly counterpart of the Lua worker in Wippy's
//! `http-spawn` example, written against the step protocol in `wit/worker.wit`.
//!
//! All task state lives in this instance's linear memory (the `STATE` cell): the host keeps
//! nothing for us between steps but the store.
//!
//! The optional JSON payload may carry `{"exit_code": N}` to end with code N instead of 0, which
//! is handy to see failure paths with the default worker.
//!
//! On wasm it is `no_std`, with the small allocator in `arena.rs`: a component built this way
//! imports no WASI at all, and a sleeping task holds one page of linear memory (see `build.rs`). A worker that wants `std` (files are denied anyway, but printing,
//! collections with a general allocator, panics with messages) builds like the examples in
//! `guest/examples/` and costs somewhat more per task.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod arena;

wit_bindgen::generate!({ world: "worker", path: "../wit" });

use alloc::string::String;
use core::cell::RefCell;

use exports::http_spawn::worker::task::{Guest, Next, Spec};
use http_spawn::worker::host::{Level, log};

/// One step a second, as in the seed's Lua worker.
const STEP_MS: u32 = 1_000;

struct Job {
    name: String,
    steps: u32,
    slept: u32,
    exit_code: i32,
}

/// The task's state. A component instance runs one thread, so a `RefCell` suffices; the
/// wrapper only tells the compiler so.
struct State(RefCell<Option<Job>>);

// SAFETY: wasm components are single-threaded; nothing else can observe this static.
unsafe impl Sync for State {}

static STATE: State = State(RefCell::new(None));

/// Reads `"exit_code": N` out of the payload without a JSON library: a guest that links serde
/// grows every instance's memory image, and this worker needs one integer. Written without
/// slicing by index, whose panic messages would pull core's formatting tables into the data.
fn requested_exit_code(payload: Option<&str>) -> Result<i32, String> {
    const KEY: &[u8] = b"\"exit_code\"";
    let Some(payload) = payload else { return Ok(0) };
    let Some(at) = payload.as_bytes().windows(KEY.len()).position(|w| w == KEY) else {
        return Ok(0);
    };
    let value = payload
        .get(at + KEY.len()..)
        .unwrap_or_default()
        .trim_start()
        .strip_prefix(':')
        .ok_or("exit_code needs a value")?
        .trim_start();
    let number = value
        .split(|c: char| !(c == '-' || c.is_ascii_digit()))
        .next()
        .unwrap_or_default();
    number
        .parse()
        .map_err(|_| String::from("exit_code must be an integer"))
}

struct Worker;

impl Guest for Worker {
    fn start(spec: Spec) -> Result<u32, String> {
        let exit_code = requested_exit_code(spec.payload.as_deref())?;
        *STATE.0.borrow_mut() = Some(Job {
            name: spec.name,
            steps: spec.duration_secs,
            slept: 0,
            exit_code,
        });
        Ok(spec.duration_secs)
    }

    fn step() -> Next {
        let mut state = STATE.0.borrow_mut();
        let Some(job) = state.as_mut() else {
            return Next::Failed("step called before start".into());
        };
        if job.slept < job.steps {
            job.slept += 1;
            return Next::Sleep(STEP_MS);
        }
        // Built by hand: `format!` would link core's formatting machinery into the data.
        let mut line = job.name.clone();
        line.push_str(" finished");
        log(Level::Info, &line);
        Next::Done(job.exit_code)
    }
}

export!(Worker);

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
