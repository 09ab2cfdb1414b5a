//! A worker that writes far more than the host keeps: 256 KiB each to stdout and stderr, and
//! thousands of log lines. The host must cap the captured log and let the task exit 0.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::io::Write;

use exports::http_spawn::worker::task::{Guest, Next, Spec};
use http_spawn::worker::host::{Level, log};

struct Chatty;

impl Guest for Chatty {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(0)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        let line = [b'x'; 1023];
        for _ in 0..256 {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
            eprintln!("{}", "e".repeat(1023));
        }
        for i in 0..10_000 {
            log(Level::Debug, &format!("chatter {i}"));
        }
        println!("the end");
        Next::Done(0)
    }
}

export!(Chatty);
