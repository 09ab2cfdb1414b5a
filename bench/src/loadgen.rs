//! A small HTTP/1.1 load generator: keep-alive connections on loopback, each sending
//! `POST /api/tasks` (or another path a plan names, such as a task's messages) and reading the answer before the next (closed loop), optionally paced to
//! a total rate (open loop, without correcting for coordinated omission). Lighter than k6 by
//! two orders of magnitude per request, so the server, not the generator, is what is measured.
//!
//! [`run`] is `make bench`'s fixed load; [`run_plan`] is the general form `make reliability`
//! uses: a body chosen per request, a count as well as a time bound, and every answer kept
//! (its status, latency, `Retry-After` and the pid of a `202`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        percentile_ms(self.latencies_us.clone(), p)
    }

    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// The `p` quantile (0 to 1) of latencies in µs, in milliseconds; NaN when there are none.
pub fn percentile_ms(mut latencies_us: Vec<u32>, p: f64) -> f64 {
    latencies_us.sort_unstable();
    if latencies_us.is_empty() {
        return f64::NAN;
    }
    let index = ((latencies_us.len() - 1) as f64 * p).round() as usize;
    f64::from(latencies_us[index]) / 1000.0
}

/// `make bench`'s load: `load.durations` on the default worker, for `load.duration`.
pub async fn run(load: Load) -> Outcome {
    let durations = load.durations;
    let plan = Plan {
        headers: None,
        addr: load.addr,
        connections: load.connections,
        duration: load.duration,
        rate: load.rate,
        count: None,
        keep_pids: false,
        stop: None,
        target: None,
        body: Arc::new(move |index| (0, seed_body(durations, index))),
    };
    let run = run_plan(plan).await;
    let mut outcome = Outcome {
        elapsed: run.elapsed,
        errors: run.connect_errors,
        ..Outcome::default()
    };
    for sample in &run.samples {
        match sample.status {
            202 => outcome.accepted += 1,
            429 | 503 => outcome.rejected += 1,
            _ => outcome.errors += 1,
        }
        if sample.status != 0 {
            outcome.latencies_us.push(sample.latency_us);
        }
    }
    outcome
}

/// The body of request `index` for `durations` on the default worker.
fn seed_body(durations: Durations, index: u64) -> String {
    let duration = match durations {
        Durations::Fixed(n) => n,
        Durations::Seed => {
            // xorshift of the index: the seed's durations without a shared generator.
            let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % 5) as u32
        }
    };
    format!("{{\"name\":\"bench-task\",\"duration\":{duration}}}")
}

/// Chooses request `index`'s label (the caller's own: good or hostile, say) and JSON body.
pub type Bodies = Arc<dyn Fn(u64) -> (u8, String) + Send + Sync>;

/// Chooses request `index`'s path, such as `/api/tasks/{pid}/messages`.
pub type Targets = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// A load: who, how many connections, how fast, how many, and what each request sends.
#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Nothing is sent after this long, even if `count` is not reached.
    pub duration: Duration,
    /// Requests per second over all connections; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    /// Requests in all: request `i` of connection `c` is number `i × connections + c`, and none
    /// numbered `count` or more is sent.
    pub count: Option<u64>,
    /// Keep the pid of every `202`, to check each task's end afterwards.
    pub keep_pids: bool,
    /// Set by the caller to stop sending early.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where each request is posted; `None` posts every one to `/api/tasks`.
    pub target: Option<Targets>,
    /// Header lines each request carries beside the generator's own, each ending in `\r\n`.
    pub headers: Option<Arc<str>>,
    pub body: Bodies,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("addr", &self.addr)
            .field("connections", &self.connections)
            .field("duration", &self.duration)
            .field("rate", &self.rate)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The label [`Plan::body`] gave the request.
    pub label: u8,
    /// The answer's status; 0 when none came (the connection broke), after which the
    /// connection sends nothing more.
    pub status: u16,
    /// From writing the request to reading the whole answer.
    pub latency_us: u32,
    /// Whether the answer carried `Retry-After`.
    pub retry_after: bool,
    /// The pid of a `202`, where the plan keeps them.
    pub pid: Option<Box<str>>,
}

/// Every answer of a run.
#[derive(Debug, Default)]
pub struct Run {
    pub samples: Vec<Sample>,
    /// Connections that could not be opened.
    pub connect_errors: u64,
    pub elapsed: Duration,
}

impl Run {
    /// How many answers had `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.samples.iter().filter(|s| s.status == status).count() as u64
    }

    /// The latency of every request that was answered, in µs.
    pub fn latencies_us(&self) -> Vec<u32> {
        self.samples
            .iter()
            .filter(|sample| sample.status != 0)
            .map(|sample| sample.latency_us)
            .collect()
    }
}

pub async fn run_plan(plan: Plan) -> Run {
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut connections = Vec::new();
    for index in 0..plan.connections {
        let plan = plan.clone();
        connections.push(tokio::spawn(async move {
            connection(&plan, index, started, deadline).await
        }));
    }
    let mut total = Run::default();
    for connection in connections {
        if let Ok((samples, connect_error)) = connection.await {
            total.samples.extend(samples);
            total.connect_errors += u64::from(connect_error);
        }
    }
    total.elapsed = started
        .elapsed()
        .min(plan.duration.max(Duration::from_millis(1)));
    total
}

/// One connection's requests; `true` if it could not connect.
async fn connection(
    plan: &Plan,
    index: usize,
    started: Instant,
    deadline: Instant,
) -> (Vec<Sample>, bool) {
    let mut samples = Vec::new();
    let Ok(mut stream) = TcpStream::connect(plan.addr).await else {
        return (samples, true);
    };
    let _ = stream.set_nodelay(true);
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate));
    let mut buffer = vec![0u8; 4096];
    let mut sent: u32 = 0;
    loop {
        let number = u64::from(sent) * plan.connections as u64 + index as u64;
        if plan.count.is_some_and(|count| number >= count)
            || plan
                .stop
                .as_ref()
                .is_some_and(|stop| stop.load(Ordering::Relaxed))
        {
            break;
        }
        if let Some(interval) = interval {
            let due = started
                + interval * sent
                + interval.mul_f64(index as f64 / plan.connections as f64);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() >= deadline {
            break;
        }
        sent += 1;
        let (label, body) = (plan.body)(number);
        let path = plan
            .target
            .as_ref()
            .map_or_else(|| "/api/tasks".to_owned(), |target| target(number));
        let headers = plan.headers.as_deref().unwrap_or("");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            plan.addr,
            body.len()
        );
        let begun = Instant::now();
        let answer = if stream.write_all(request.as_bytes()).await.is_ok() {
            read_answer(&mut stream, &mut buffer, plan.keep_pids).await
        } else {
            None
        };
        let latency_us = begun.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let Some(answer) = answer else {
            samples.push(Sample {
                label,
                status: 0,
                latency_us,
                retry_after: false,
                pid: None,
            });
            break;
        };
        samples.push(Sample {
            label,
            status: answer.status,
            latency_us,
            retry_after: answer.retry_after,
            pid: answer.pid,
        });
    }
    (samples, false)
}

/// What [`read_answer`] reads of a response.
struct Answer {
    status: u16,
    retry_after: bool,
    pid: Option<Box<str>>,
}

/// Reads one response: its status, whether it carries `Retry-After`, and (when asked) the pid
/// in a `202`'s body.
async fn read_answer(stream: &mut TcpStream, buffer: &mut [u8], want_pid: bool) -> Option<Answer> {
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
    let header = |wanted: &str| {
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(wanted).then(|| value.trim())
        })
    };
    let length: usize = header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let retry_after = header("retry-after").is_some();
    let mut body = Vec::new();
    let keep_body = want_pid && status == 202;
    if keep_body {
        body.extend_from_slice(&buffer[header_end..filled.min(header_end + length)]);
    }
    let mut remaining = (header_end + length).saturating_sub(filled);
    while remaining > 0 {
        let chunk = remaining.min(buffer.len());
        let read = stream.read(&mut buffer[..chunk]).await.ok()?;
        if read == 0 {
            return None;
        }
        if keep_body {
            body.extend_from_slice(&buffer[..read]);
        }
        remaining -= read;
    }
    let pid = keep_body.then(|| pid_of(&body)).flatten();
    Some(Answer {
        status,
        retry_after,
        pid,
    })
}

/// The `pid` of a `202`'s body, `{"pid":"...",...}`, found without parsing the whole JSON.
fn pid_of(body: &[u8]) -> Option<Box<str>> {
    const KEY: &[u8] = b"\"pid\":\"";
    let start = find(body, KEY)? + KEY.len();
    let length = body[start..].iter().position(|&b| b == b'"')?;
    Some(
        std::str::from_utf8(&body[start..start + length])
            .ok()?
            .into(),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_found_in_a_202_body() {
        let body = br#"{"pid":"6f1c2a9e-1","name":"x","status":"spawned"}"#;
        assert_eq!(pid_of(body).as_deref(), Some("6f1c2a9e-1"));
        assert_eq!(pid_of(br#"{"error":"full"}"#), None);
    }

    #[test]
    fn percentiles_round_to_the_nearest_rank() {
        let latencies: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert!((percentile_ms(latencies.clone(), 0.99) - 99.0).abs() < 1e-9);
        assert!((percentile_ms(latencies, 0.5) - 51.0).abs() < 1e-9);
        assert!(percentile_ms(Vec::new(), 0.5).is_nan());
    }
}
