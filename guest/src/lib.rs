//! The default http-spawn worker: it "works" on a named job for `duration` seconds, one step a
//! second, and exits 0. It is the WebAssembly counterpart of the Lua worker in Wippy's
//! `http-spawn` example, written against the step protocol in `wit/worker.wit`.
//!
//! All task state lives in this instance's linear memory (the `STATE` cell): the host keeps
//! nothing for us between steps but the store.
//!
//! The optional JSON payload may carry `{"exit_code": N}` to end with code N instead of 0, which
//! is handy to see failure paths with the default worker.

wit_bindgen::generate!({ world: "worker", path: "../wit" });

use std::cell::RefCell;

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

thread_local! {
    static STATE: RefCell<Option<Job>> = const { RefCell::new(None) };
}

/// Reads `"exit_code": N` out of the payload without a JSON library: a guest that links serde
/// grows every instance's memory image, and this worker needs one integer.
fn requested_exit_code(payload: Option<&str>) -> Result<i32, String> {
    let Some(payload) = payload else { return Ok(0) };
    let Some(at) = payload.find("\"exit_code\"") else {
        return Ok(0);
    };
    let rest = payload[at + "\"exit_code\"".len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or("exit_code needs a value")?
        .trim_start();
    let end = rest
        .find(|c: char| !(c == '-' || c.is_ascii_digit()))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .map_err(|_| format!("exit_code must be an integer, got {:?}", &rest[..end]))
}

struct Worker;

impl Guest for Worker {
    fn start(spec: Spec) -> Result<u32, String> {
        let exit_code = requested_exit_code(spec.payload.as_deref())?;
        log(
            Level::Info,
            &format!("working on {} for {} s", spec.name, spec.duration_secs),
        );
        STATE.with_borrow_mut(|state| {
            *state = Some(Job {
                name: spec.name,
                steps: spec.duration_secs,
                slept: 0,
                exit_code,
            })
        });
        Ok(spec.duration_secs)
    }

    fn step() -> Next {
        STATE.with_borrow_mut(|state| {
            let Some(job) = state.as_mut() else {
                return Next::Failed("step called before start".into());
            };
            if job.slept < job.steps {
                job.slept += 1;
                return Next::Sleep(STEP_MS);
            }
            log(Level::Info, &format!("{} finished", job.name));
            Next::Done(job.exit_code)
        })
    }
}

export!(Worker);
