//! Hostile worker: tries to read a file, list a directory, and read the environment and the
//! arguments. It exits 0 when the host granted none of it, and fails naming whatever it could
//! reach. What it saw goes to stdout, which the host captures. (A worker that so much as
//! imports sockets is refused before it runs: see `netprobe`.)

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit};

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

async fn run(ctx: Ctx) -> Exit {
    if knobs::is_good(ctx.spec()) {
        return Ok(0);
    }
    let leaks = probe();
    if leaks.is_empty() {
        Ok(0)
    } else {
        Err(format!("sandbox leak: {}", leaks.join("; ")))
    }
}

http_spawn_sdk::worker!(run);
