//! Compute kernels for the fuel benchmark: `{"kernel": K, "n": N}` runs kernel K on size N in
//! the first step and exits with a checksum byte, so the work cannot be optimised away.
//! Kernels: 0 integer hashing (arithmetic in a tight loop), 1 a prime sieve (memory loads and
//! stores), 2 naive recursive Fibonacci (calls), 3 insertion sort of a pseudo-random array
//! (branches and memory).

#[path = "shared/knobs.rs"]
mod knobs;

use http_spawn_sdk::{Ctx, Exit, Spec};

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
        other => return Err(format!("no kernel {other}")),
    };
    Ok((result & 0x7f) as i32)
}

http_spawn_sdk::worker!(run, plan = plan);
