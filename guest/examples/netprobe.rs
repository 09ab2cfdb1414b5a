//! Hostile worker: opens a TCP connection, so its component imports `wasi:sockets`. The host
//! must refuse the module before any task runs it, at start and when it is uploaded.
wit_bindgen::generate!({ world: "worker", path: "../wit" });

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct NetProbe;

impl Guest for NetProbe {
    fn start(_: Spec) -> Result<u32, String> {
        Ok(0)
    }

    fn step() -> Next {
        match std::net::TcpStream::connect("127.0.0.1:22") {
            Ok(_) => Next::Failed("connected to 127.0.0.1:22".into()),
            Err(e) => Next::Failed(format!("connect denied at run time ({e})")),
        }
    }
}

export!(NetProbe);
