//! A worker built against the 0.2.0 contract (`wit/v0.2/worker.wit`), with its own bindings
//! rather than the SDK: it waits up to `duration` seconds for one message, logs
//! "v0.2 worker got <body>" and exits 0; with no message it exits 3. The host must keep
//! running such workers beside 0.3.0 ones: a call to one reaches it as a plain message, which
//! it cannot answer.

wit_bindgen::generate!({ world: "worker", path: "../../wit/v0.2" });

use std::sync::atomic::{AtomicU32, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec, Wake};
use http_spawn::worker::host::{Level, log};

/// How long to wait for the message, in milliseconds. A component instance runs one thread;
/// the atomic only says so.
static WAIT_MS: AtomicU32 = AtomicU32::new(0);

struct V02;

impl Guest for V02 {
    fn start(spec: Spec) -> Result<u32, String> {
        WAIT_MS.store(spec.duration_secs.saturating_mul(1_000), Ordering::Relaxed);
        Ok(0)
    }

    fn step(wake: Wake) -> Next {
        match wake {
            Wake::Started => Next::Receive(WAIT_MS.load(Ordering::Relaxed)),
            Wake::Message(message) => {
                log(Level::Info, &format!("v0.2 worker got {}", message.body));
                Next::Done(0)
            }
            Wake::Timeout => Next::Done(3),
            _ => Next::Receive(WAIT_MS.load(Ordering::Relaxed)),
        }
    }
}

export!(V02);
