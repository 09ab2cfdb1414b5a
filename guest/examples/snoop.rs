//! Hostile worker: tries to read a file, list a directory, and read the environment and the
//! arguments. It exits 0 when the host granted none of it, and fails naming whatever it could
//! reach. What it saw goes to stdout, which the host captures. (A worker that so much as
//! imports sockets is refused before it runs: see `netprobe`.)
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Snoop;

fn probe() -> Vec<String> {
    let mut leaks = Vec::new();
    for path in ["/etc/passwd", "/proc/self/environ", "Cargo.toml", "."] {
        match std::fs::read(path) {
            Ok(bytes) => leaks.push(format!("read {path}: {} bytes", bytes.len())),
            Err(e) => println!("read {path}: denied ({e})"),
        }
        match std::fs::read_dir(path) {
            Ok(_) => leaks.push(format!("listed {path}")),
            Err(e) => println!("list {path}: denied ({e})"),
        }
    }
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    if vars.is_empty() {
        println!("env: empty");
    } else {
        leaks.push(format!("env: {}", vars.join(",")));
    }
    let args: Vec<String> = std::env::args().collect();
    if args.is_empty() {
        println!("args: empty");
    } else {
        leaks.push(format!("args: {args:?}"));
    }
    leaks
}

impl Guest for Snoop {
    fn start(spec: Spec) -> Result<u32, String> {
        knobs::remember(&spec.name);
        Ok(0)
    }

    fn step() -> Next {
        if knobs::is_good() {
            return Next::Done(0);
        }
        let leaks = probe();
        if leaks.is_empty() {
            Next::Done(0)
        } else {
            Next::Failed(format!("sandbox leak: {}", leaks.join("; ")))
        }
    }
}

export!(Snoop);
