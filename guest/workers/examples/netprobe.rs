//! Hostile worker: opens a TCP connection, so its component imports `wasi:sockets`. The host
//! must refuse the module before any task runs it, at start and when it is uploaded.

use http_spawn_sdk::{Ctx, Exit};

async fn run(_: Ctx) -> Exit {
    match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => Err("connected to 127.0.0.1:22".into()),
        Err(e) => Err(format!("connect denied at run time ({e})")),
    }
}

http_spawn_sdk::worker!(run);
