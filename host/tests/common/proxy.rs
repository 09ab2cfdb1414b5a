//! A TCP proxy on loopback in front of a server (the tests' PostgreSQL), for the faults a
//! network makes: `cut` closes every connection and refuses new ones; `stall` keeps every
//! connection open but forwards nothing, either way, as a network that drops packets does;
//! `deafen` forwards what the client sends but none of the server's answers (a request that
//! is carried out, its answer lost); `lose_next_commit_answer` does that to one connection
//! for good from the moment it asks PostgreSQL to `COMMIT`; `delay` holds each chunk of bytes a while
//! before forwarding it; `restore` ends each of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often a held chunk looks again whether it may go.
const HOLD_POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Faults {
    /// New connections are refused.
    refusing: AtomicBool,
    /// Bumped by `cut`: connections opened before close.
    generation: AtomicU64,
    /// Nothing the client sends is forwarded while set.
    requests_held: AtomicBool,
    /// Nothing the server answers is forwarded while set.
    replies_held: AtomicBool,
    /// Each chunk waits this long (milliseconds) before it is forwarded.
    delay_ms: AtomicU64,
    /// Set: the next connection whose startup message holds this text and that sends `COMMIT`
    /// hears nothing more from the server.
    lose_commit_answer: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Faults {
    /// Whether the connection that sent `chunk` (its first chunk being `startup`) is to lose
    /// its answers from here: the one-shot `lose_next_commit_answer` is used up by it.
    fn loses_answers_after(&self, startup: &[u8], chunk: &[u8]) -> bool {
        let mut armed = self
            .lose_commit_answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let hit = armed
            .as_deref()
            .is_some_and(|marker| contains(startup, marker) && contains(chunk, b"COMMIT"));
        if hit {
            *armed = None;
        }
        hit
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The proxy; it serves until the test's runtime ends.
pub struct Proxy {
    pub port: u16,
    faults: Arc<Faults>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let faults = Arc::new(Faults::default());
        let shared = Arc::clone(&faults);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if shared.refusing.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let faults = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let born = faults.generation.load(Ordering::Acquire);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    // Set once this connection is to hear nothing more from the server.
                    let deaf = AtomicBool::new(false);
                    let cut = async {
                        while faults.generation.load(Ordering::Acquire) == born {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! {
                        () = forward(client_read, server_write, Direction::Requests(&deaf), &faults) => {}
                        () = forward(server_read, client_write, Direction::Replies(&deaf), &faults) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Self { port, faults }
    }

    /// Closes every connection, and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.faults.refusing.store(true, Ordering::Release);
        self.faults.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forwards nothing, either way, on any connection (new ones included), without closing
    /// any, until `restore`.
    pub fn stall(&self) {
        self.faults.requests_held.store(true, Ordering::Release);
        self.faults.replies_held.store(true, Ordering::Release);
    }

    /// Forwards what clients send, and none of the server's answers, on any connection, until
    /// `restore`.
    pub fn deafen(&self) {
        self.faults.replies_held.store(true, Ordering::Release);
    }

    /// Makes the next connection whose startup message holds `marker` (such as its
    /// `application_name`) and that sends `COMMIT` hear nothing more from the server: the
    /// commit is carried out, its answer lost, and that connection never hears again.
    pub fn lose_next_commit_answer(&self, marker: &str) {
        *self
            .faults
            .lose_commit_answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(marker.as_bytes().to_vec());
    }

    /// Holds every chunk `delay` before forwarding it, until `restore`.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.faults.delay_ms.store(ms, Ordering::Release);
    }

    /// Ends every fault: new connections are taken, and bytes flow at once.
    pub fn restore(&self) {
        self.faults.refusing.store(false, Ordering::Release);
        self.faults.requests_held.store(false, Ordering::Release);
        self.faults.replies_held.store(false, Ordering::Release);
        self.faults.delay_ms.store(0, Ordering::Release);
    }

    /// `url` (a `postgres://user@host:port/db` URL) with its host and port replaced by the
    /// proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database path");
        let (user, _) = authority.rsplit_once('@').expect("a user");
        format!("{scheme}://{user}@127.0.0.1:{}/{path}", self.port)
    }
}

/// The port of a `scheme://user@host:port/path` URL.
pub fn port_of(url: &str) -> u16 {
    let authority = url.split("://").nth(1).expect("a URL");
    let authority = authority.split('/').next().expect("an authority");
    authority
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port")
}

/// Which way a copy runs, with the connection's flag that holds its answers for good.
#[derive(Clone, Copy)]
enum Direction<'a> {
    Requests(&'a AtomicBool),
    Replies(&'a AtomicBool),
}

/// Copies `from` to `to` a chunk at a time, each held while the proxy holds that direction or
/// delays.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction<'_>,
    faults: &Faults,
) {
    let mut buffer = vec![0; 16 * 1024];
    let mut startup: Option<Vec<u8>> = None;
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        let delay = faults.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match direction {
            Direction::Requests(deaf) => {
                let startup = startup.get_or_insert_with(|| chunk.to_vec());
                if faults.loses_answers_after(startup, chunk) {
                    deaf.store(true, Ordering::Release);
                }
                while faults.requests_held.load(Ordering::Acquire) {
                    tokio::time::sleep(HOLD_POLL).await;
                }
            }
            Direction::Replies(deaf) => {
                while faults.replies_held.load(Ordering::Acquire) || deaf.load(Ordering::Acquire) {
                    tokio::time::sleep(HOLD_POLL).await;
                }
            }
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}
