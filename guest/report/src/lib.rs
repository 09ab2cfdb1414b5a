//! The `report` worker: a second worker to run beside the default one, or to swap in for it.
//! It "builds a report" of `duration` seconds in sections of a quarter second each: every
//! section folds a block of rows into a checksum, each whole second is logged, and at the end
//! one more block is folded and the total logged. The payload may set `{"rows": N}` per section
//! (default 1,000, at most 100,000).
//!
//! Built like the default worker (`no_std` on `http-spawn-sdk`'s allocator, a 2 KiB stack), so
//! it fits the default 1 MiB memory cap and a sleeping task holds one page.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;

use http_spawn_sdk::{Ctx, Exit, Spec, payload, text};

/// A section every quarter second.
const SECTION_MS: u32 = 250;
const SECTIONS_PER_SEC: u32 = 1_000 / SECTION_MS;
const DEFAULT_ROWS: u64 = 1_000;
const MAX_ROWS: u64 = 100_000;
/// FNV-1a's offset basis, where the checksum starts.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Rows per section: the payload's `rows`, or the default.
fn rows(spec: &Spec) -> Result<u64, String> {
    match payload::int(spec.payload.as_deref(), "rows") {
        Ok(None) => Ok(DEFAULT_ROWS),
        Ok(Some(n)) => u64::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ROWS)
            .ok_or_else(rows_error),
        Err(_) => Err(rows_error()),
    }
}

fn rows_error() -> String {
    String::from("rows must be an integer from 0 to 100000")
}

fn sections(spec: &Spec) -> u32 {
    spec.duration_secs.saturating_mul(SECTIONS_PER_SEC)
}

/// One step per section; bad `rows` fail the task before it starts.
fn plan(spec: &Spec) -> Result<u32, String> {
    rows(spec)?;
    Ok(sections(spec))
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

async fn run(ctx: Ctx) -> Exit {
    let rows = rows(ctx.spec())?;
    let sections = sections(ctx.spec());
    let mut checksum = FNV_OFFSET;

    for done in 1..=sections {
        checksum = fold(checksum, u64::from(done - 1) * rows, rows);
        if done % SECTIONS_PER_SEC == 0 {
            let mut line = String::from("section ");
            text::push_u32(&mut line, done);
            line.push('/');
            text::push_u32(&mut line, sections);
            ctx.debug(&line);
        }
        ctx.sleep(SECTION_MS).await;
    }
    // The last step folds a block too, as every step does.
    checksum = fold(checksum, u64::from(sections) * rows, rows);

    let mut line = String::from("report ");
    line.push_str(&ctx.spec().name);
    line.push_str(" complete: ");
    text::push_u64(&mut line, u64::from(sections) * rows);
    line.push_str(" rows, checksum ");
    text::push_u64(&mut line, checksum);
    ctx.info(&line);
    Ok(0)
}

http_spawn_sdk::worker!(run, plan = plan);
