//! Compute kernels for the fuel benchmark: `{"kernel": K, "n": N}` runs kernel K on size N in
//! the first step and exits with a checksum byte, so the work cannot be optimised away.
//! Kernels: 0 integer hashing (arithmetic in a tight loop), 1 a prime sieve (memory loads and
//! stores), 2 naive recursive Fibonacci (calls), 3 insertion sort of a pseudo-random array
//! (branches and memory).
wit_bindgen::generate!({ world: "worker", path: "../wit" });

#[path = "shared/knobs.rs"]
mod knobs;

use std::sync::atomic::{AtomicU64, Ordering};

use exports::http_spawn::worker::task::{Guest, Next, Spec};

struct Compute;

static KERNEL: AtomicU64 = AtomicU64::new(0);
static SIZE: AtomicU64 = AtomicU64::new(0);

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

impl Guest for Compute {
    fn start(spec: Spec) -> Result<u32, String> {
        let payload = spec.payload.as_deref();
        KERNEL.store(
            knobs::number(payload, "kernel").unwrap_or(0),
            Ordering::Relaxed,
        );
        SIZE.store(
            knobs::number(payload, "n").unwrap_or(1000),
            Ordering::Relaxed,
        );
        Ok(0)
    }

    fn step() -> Next {
        let n = std::hint::black_box(SIZE.load(Ordering::Relaxed));
        let result = match KERNEL.load(Ordering::Relaxed) {
            0 => hash(n),
            1 => sieve(n),
            2 => fib(n),
            3 => sort(n),
            other => return Next::Failed(format!("no kernel {other}")),
        };
        Next::Done((result & 0x7f) as i32)
    }
}

export!(Compute);
