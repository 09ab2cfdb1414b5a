//! A small HTTP/1.1 load generator: keep-alive connections on loopback, each sending
//! `POST /api/tasks` and reading the answer before the next (closed loop), optionally paced to
//! a total rate (open loop, without correcting for coordinated omission). Lighter than k6 by
//! two orders of magnitude per request, so the server, not the generator, is what is measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the generator sends.
#[derive(Debug, Clone, Copy)]
pub enum Durations {
    /// Every task `duration: n`.
    Fixed(u32),
    /// The seed's 1–5 s, uniformly.
    Seed,
}

#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second over all connections; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    pub durations: Durations,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub accepted: u64,
    pub rejected: u64,
    pub errors: u64,
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        f64::from(sorted[index]) / 1000.0
    }

    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(load: Load) -> Outcome {
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut connections = Vec::new();
    for index in 0..load.connections {
        let load = load.clone();
        connections.push(tokio::spawn(async move {
            connection(&load, index, started, deadline).await
        }));
    }
    let mut total = Outcome::default();
    for connection in connections {
        if let Ok(outcome) = connection.await {
            total.accepted += outcome.accepted;
            total.rejected += outcome.rejected;
            total.errors += outcome.errors;
            total.latencies_us.extend(outcome.latencies_us);
        }
    }
    total.elapsed = started
        .elapsed()
        .min(load.duration.max(Duration::from_millis(1)));
    total
}

async fn connection(load: &Load, index: usize, started: Instant, deadline: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(mut stream) = TcpStream::connect(load.addr).await else {
        outcome.errors += 1;
        return outcome;
    };
    let _ = stream.set_nodelay(true);
    let interval = load
        .rate
        .map(|rate| Duration::from_secs_f64(load.connections as f64 / rate));
    // A per-connection xorshift: the seed's durations without a shared generator.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (index as u64).wrapping_mul(0x9e37_79b9);
    let mut buffer = vec![0u8; 4096];
    let mut sent: u32 = 0;
    loop {
        if let Some(interval) = interval {
            let due = started
                + interval * sent
                + interval.mul_f64(index as f64 / load.connections as f64);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() >= deadline {
            break;
        }
        sent += 1;
        let duration = match load.durations {
            Durations::Fixed(n) => n,
            Durations::Seed => {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                1 + (seed % 5) as u32
            }
        };
        let body = format!("{{\"name\":\"bench-task\",\"duration\":{duration}}}");
        let request = format!(
            "POST /api/tasks HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            load.addr,
            body.len()
        );
        let begun = Instant::now();
        if stream.write_all(request.as_bytes()).await.is_err() {
            outcome.errors += 1;
            return outcome;
        }
        match read_status(&mut stream, &mut buffer).await {
            Some(202) => outcome.accepted += 1,
            Some(429 | 503) => outcome.rejected += 1,
            Some(_) => outcome.errors += 1,
            None => {
                outcome.errors += 1;
                return outcome;
            }
        }
        outcome
            .latencies_us
            .push(begun.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    outcome
}

/// Reads one response and returns its status code.
async fn read_status(stream: &mut TcpStream, buffer: &mut [u8]) -> Option<u16> {
    let mut filled = 0;
    let header_end = loop {
        let read = stream.read(&mut buffer[filled..]).await.ok()?;
        if read == 0 {
            return None;
        }
        filled += read;
        if let Some(end) = find(&buffer[..filled], b"\r\n\r\n") {
            break end + 4;
        }
        if filled == buffer.len() {
            return None;
        }
    };
    let head = std::str::from_utf8(&buffer[..header_end]).ok()?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut remaining = (header_end + length).saturating_sub(filled);
    while remaining > 0 {
        let chunk = remaining.min(buffer.len());
        let read = stream.read(&mut buffer[..chunk]).await.ok()?;
        if read == 0 {
            return None;
        }
        remaining -= read;
    }
    Some(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
