//! The `report` worker: a second worker to run beside the default one, or to swap in for it.
//! It "builds a report" of `duration` seconds in sections of a quarter second each: every step
//! folds a block of rows into a checksum, logs each whole second, and the last step logs the
//! total. The payload may set `{"rows": N}` per section (default 1,000, at most 100,000).
//!
//! Built like the default worker (`no_std`, the same arena allocator), so it fits the default
//! 1 MiB memory cap and a sleeping task holds one page.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
#[path = "../../src/arena.rs"]
mod arena;

wit_bindgen::generate!({ world: "worker", path: "../../wit" });

use alloc::string::String;
use core::cell::RefCell;

use exports::http_spawn::worker::task::{Guest, Next, Spec};
use http_spawn::worker::host::{Level, log};

/// A section every quarter second.
const SECTION_MS: u32 = 250;
const SECTIONS_PER_SEC: u32 = 1_000 / SECTION_MS;
const DEFAULT_ROWS: u64 = 1_000;
const MAX_ROWS: u64 = 100_000;

struct Report {
    name: String,
    sections: u32,
    done: u32,
    rows: u64,
    checksum: u64,
}

/// The task's state; a component instance runs one thread.
struct State(RefCell<Option<Report>>);

// SAFETY: wasm components are single-threaded; nothing else can observe this static.
unsafe impl Sync for State {}

static STATE: State = State(RefCell::new(None));

/// `"rows": N` from the payload, parsed by hand to keep the worker small.
fn rows(payload: Option<&str>) -> Result<u64, String> {
    const KEY: &[u8] = b"\"rows\"";
    let Some(payload) = payload else {
        return Ok(DEFAULT_ROWS);
    };
    let Some(at) = payload.as_bytes().windows(KEY.len()).position(|w| w == KEY) else {
        return Ok(DEFAULT_ROWS);
    };
    let digits = payload
        .get(at + KEY.len()..)
        .unwrap_or_default()
        .trim_start()
        .strip_prefix(':')
        .unwrap_or_default()
        .trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    match digits.get(..end).and_then(|n| n.parse::<u64>().ok()) {
        Some(n) if n <= MAX_ROWS => Ok(n),
        _ => Err(String::from("rows must be an integer from 0 to 100000")),
    }
}

/// Appends `n` in decimal: `format!` would link core's formatting machinery into the data.
fn push_number(line: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in digits[..len].iter().rev() {
        line.push(digit as char);
    }
}

/// Folds one section's rows into the checksum (FNV-1a over the row numbers).
fn fold(mut checksum: u64, first_row: u64, rows: u64) -> u64 {
    for row in first_row..first_row + rows {
        for byte in row.to_le_bytes() {
            checksum ^= u64::from(byte);
            checksum = checksum.wrapping_mul(0x0100_0000_01b3);
        }
    }
    checksum
}

struct Worker;

impl Guest for Worker {
    fn start(spec: Spec) -> Result<u32, String> {
        let rows = rows(spec.payload.as_deref())?;
        let sections = spec.duration_secs.saturating_mul(SECTIONS_PER_SEC);
        *STATE.0.borrow_mut() = Some(Report {
            name: spec.name,
            sections,
            done: 0,
            rows,
            checksum: 0xcbf2_9ce4_8422_2325,
        });
        Ok(sections)
    }

    fn step() -> Next {
        let mut state = STATE.0.borrow_mut();
        let Some(report) = state.as_mut() else {
            return Next::Failed("step called before start".into());
        };
        let first_row = u64::from(report.done) * report.rows;
        report.checksum = fold(report.checksum, first_row, report.rows);
        if report.done < report.sections {
            report.done += 1;
            if report.done % SECTIONS_PER_SEC == 0 {
                let mut line = String::from("section ");
                push_number(&mut line, u64::from(report.done));
                line.push('/');
                push_number(&mut line, u64::from(report.sections));
                log(Level::Debug, &line);
            }
            return Next::Sleep(SECTION_MS);
        }
        let mut line = String::from("report ");
        line.push_str(&report.name);
        line.push_str(" complete: ");
        push_number(&mut line, u64::from(report.sections) * report.rows);
        line.push_str(" rows, checksum ");
        push_number(&mut line, report.checksum);
        log(Level::Info, &line);
        Next::Done(0)
    }
}

export!(Worker);

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
