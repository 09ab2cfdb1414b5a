//! Reading a host's API with plain blocking sockets: the health, and every task record a page
//! at a time. Answers are read to the end of the connection (`Connection: close`), so neither a
//! content length nor chunking needs handling.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The most tasks a page of `GET /api/tasks` may hold.
const PAGE: usize = 1000;

/// GET `path`: the status and the body.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", path)
}

/// DELETE `path`: the status and the body.
pub fn delete(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "DELETE", path)
}

/// `method` on `path`, with no body: the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading {method} {path}"))?;
    let response = String::from_utf8(response).context("a response that is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: a response without a head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("{method} {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// GET `path`, which must answer 200 with JSON.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> anyhow::Result<T> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        bail!("GET {path} answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not the JSON expected"))
}

/// `GET /api/health`.
pub fn health(addr: SocketAddr) -> anyhow::Result<Health> {
    get_json(addr, "/api/health")
}

#[derive(Debug, Deserialize)]
pub struct Health {
    pub live: u64,
    pub queued: u64,
    pub tasks: Totals,
}

#[derive(Debug, Deserialize)]
pub struct Totals {
    pub spawned: u64,
    pub ended: u64,
    pub exited_ok: u64,
}

/// The part of a task's record the suite checks.
#[derive(Debug, Deserialize)]
pub struct Record {
    pub pid: String,
    pub worker: String,
    pub status: String,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub logs_dropped_bytes: u64,
    /// The attempt running or last run, from 1.
    pub attempt: u32,
    /// Each attempt's end, where the task had more than one or a restart policy.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// When it started, and when it was scheduled to (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub run_at: Option<String>,
    /// The schedule, and its tick, that created it.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub schedule_tick: Option<String>,
    /// When it ended (RFC 3339), and its concurrency key.
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub concurrency_key: Option<String>,
}

impl Record {
    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "exited" | "failed" | "killed")
    }

    pub fn exited_0(&self) -> bool {
        self.status == "exited" && self.exit_code == Some(0)
    }

    /// One line saying how the task ended, for a failure message.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}): {} {} exit {:?} {}",
            self.pid,
            self.worker,
            self.status,
            self.outcome.as_deref().unwrap_or("-"),
            self.exit_code,
            self.error
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect::<String>()
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct Attempt {
    pub outcome: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    tasks: Vec<Record>,
    next: Option<String>,
}

/// Every task the host lists, newest first, a page of a thousand at a time; at most `cap`
/// (the bound against a store far larger than expected).
pub fn list_tasks(addr: SocketAddr, cap: usize) -> anyhow::Result<Vec<Record>> {
    let mut tasks = Vec::new();
    let mut next: Option<String> = None;
    while tasks.len() < cap {
        let path = match &next {
            Some(before) => format!("/api/tasks?limit={PAGE}&before={}", encode(before)),
            None => format!("/api/tasks?limit={PAGE}"),
        };
        let page: Page = get_json(addr, &path)?;
        tasks.extend(page.tasks);
        match page.next {
            Some(cursor) => next = Some(cursor),
            None => break,
        }
    }
    tasks.truncate(cap);
    Ok(tasks)
}

/// Percent-encodes a cursor for a query string (it is opaque: assume nothing of its bytes).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
