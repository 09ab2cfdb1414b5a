//! Compute kernels for the fuel benchmark: `{"kernel": K, "n": N}` runs kernel K on size N in
//! the first step and exits with a checksum byte, so the work cannot be optimised away.
//! Kernels: 0 integer hashing (arithmetic in a tight loop), 1 a prime sieve (memory loads and
//! stores), 2 naive recursive Fibonacci (calls), 3 insertion sort of a pseudo-random array
//! (branches and memory), 4 JSON parse and serialise of N records (what a real worker spends
//! its time on: byte scanning, allocation, string copies, float formatting, through serde's
//! generic code rather than one hand-written loop).

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};
use serde::{Deserialize, Serialize};

fn hash(n: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= i;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
    }
    x
}

fn sieve(n: u64) -> u64 {
    let n = n as usize;
    let mut composite = vec![false; n + 1];
    let mut count = 0;
    for i in 2..=n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j <= n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn sort(n: u64) -> u64 {
    let mut seed: u32 = 12345;
    let mut values: Vec<u32> = (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        })
        .collect();
    for i in 1..values.len() {
        let mut j = i;
        while j > 0 && values[j - 1] > values[j] {
            values.swap(j - 1, j);
            j -= 1;
        }
    }
    u64::from(values[values.len() / 2])
}

/// One record of the JSON kernel's document, shaped like an API response or a task's payload:
/// strings (one of them escaped), integers, a float, a bool, a null or not, a nested object
/// and arrays of strings and of objects.
#[derive(Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    note: Option<String>,
    tags: Vec<String>,
    address: Address,
    events: Vec<Event>,
}

#[derive(Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    zip: String,
}

#[derive(Serialize, Deserialize)]
struct Event {
    at: u64,
    kind: String,
    amount: i64,
}

/// Times the JSON kernel parses and serialises its document: enough that building the document
/// once is a small part of the run.
const JSON_ROUNDS: u64 = 8;

/// `n` pseudo-random records, the same every run.
fn records(n: u64) -> Vec<Record> {
    const CITIES: [&str; 4] = ["Lisbon", "Zürich", "Osaka", "Montréal"];
    const KINDS: [&str; 3] = ["created", "paid", "refunded"];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|id| {
            let r = next();
            Record {
                id,
                name: format!("user-{id:06}"),
                email: format!("user{id}@example.com"),
                active: r & 1 == 0,
                score: (r % 100_000) as f64 / 997.0,
                note: (r % 3 == 0).then(|| format!("said \"hello\"\non line {}", r % 50)),
                tags: (0..r % 4)
                    .map(|t| format!("tag{}", (r >> (8 * t)) % 32))
                    .collect(),
                address: Address {
                    street: format!("{} Main Street", r % 999),
                    city: CITIES[(r % 4) as usize].to_owned(),
                    zip: format!("{:05}", r % 100_000),
                },
                events: (0..1 + r % 4)
                    .map(|e| Event {
                        at: 1_700_000_000 + (r >> 20) % 1_000_000 + e * 60,
                        kind: KINDS[((r >> e) % 3) as usize].to_owned(),
                        amount: (r >> 32) as i64 % 20_000 - 10_000,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Builds a document of `n` records, then parses it and serialises it back `JSON_ROUNDS`
/// times, each round reading what the one before wrote.
fn json(n: u64) -> Result<u64, String> {
    let mut text = serde_json::to_string(&records(n)).map_err(|e| e.to_string())?;
    let mut sum = 0u64;
    for _ in 0..JSON_ROUNDS {
        let parsed: Vec<Record> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        sum = parsed.iter().fold(sum, |sum, record| {
            sum.wrapping_mul(31)
                .wrapping_add(record.id ^ record.events.len() as u64)
        });
        text = serde_json::to_string(&parsed).map_err(|e| e.to_string())?;
        sum = sum.wrapping_add(text.len() as u64);
    }
    Ok(sum)
}

/// The kernel and its size, from the payload: kernel 0 on 1,000 unless it says otherwise.
fn job(spec: &Spec) -> Result<(u64, u64), String> {
    Ok((
        knobs::number(spec, "kernel")?.unwrap_or(0),
        knobs::number(spec, "n")?.unwrap_or(1000),
    ))
}

fn plan(spec: &Spec) -> Result<u32, String> {
    job(spec).map(|_| 0)
}

async fn run(ctx: Ctx) -> Exit {
    let (kernel, n) = job(ctx.spec())?;
    let n = std::hint::black_box(n);
    let result = match kernel {
        0 => hash(n),
        1 => sieve(n),
        2 => fib(n),
        3 => sort(n),
        4 => json(n)?,
        other => return Err(format!("no kernel {other}")),
    };
    Ok((result & 0x7f) as i32)
}

http_spawn_sdk::worker!(run, plan = plan);
