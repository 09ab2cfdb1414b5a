//! The `checkpoint` interface of `wit/worker.wit`: the host reads a worker's state out between
//! two steps and writes it back into a fresh instance of the same module.
//!
//! Between two steps no frame is live: the stack (placed first in memory, below the data) is
//! empty, and everything else the worker holds (its future, its allocator's bookkeeping, its
//! data) lies from the end of the stack up to the heap's top. So that range is the state. It is
//! read and written in fixed chunks passed as flat words, which the canonical ABI carries
//! without allocating in the guest: an allocation would change the allocator's own state while
//! it is being copied.

#[cfg(target_arch = "wasm32")]
use alloc::string::String;

use crate::bindings::exports::http_spawn::worker::checkpoint::{Chunk, Extent};

/// Bytes in a chunk: 15 words.
const CHUNK_BYTES: usize = 120;

#[cfg(target_arch = "wasm32")]
mod layout {
    use core::arch::wasm32::{memory_grow, memory_size};

    const PAGE_BYTES: usize = 64 * 1024;

    unsafe extern "C" {
        /// Where the linker put the first byte of data: the end of the stack, which comes
        /// first.
        static __global_base: u8;
        /// The end of the module's data, initialised and zeroed.
        static __data_end: u8;
    }

    pub(super) fn start() -> usize {
        (&raw const __global_base) as usize
    }

    pub(super) fn zeroed_from() -> usize {
        (&raw const __data_end) as usize
    }

    pub(super) fn memory_end() -> usize {
        memory_size(0) * PAGE_BYTES
    }

    /// The end of the heap in use: the arena's top without `std`; with it, std's allocator
    /// keeps its bookkeeping in the heap, which may reach the end of memory.
    pub(super) fn end() -> usize {
        #[cfg(not(feature = "std"))]
        let end = crate::arena::top().max(zeroed_from());
        #[cfg(feature = "std")]
        let end = memory_end();
        end
    }

    /// Grows memory to reach `end`; false if it cannot.
    pub(super) fn reach(end: usize) -> bool {
        let size = memory_end();
        end <= size || memory_grow(0, (end - size).div_ceil(PAGE_BYTES)) != usize::MAX
    }
}

/// The interface's `locate`.
#[cfg(target_arch = "wasm32")]
pub fn locate() -> Result<Extent, String> {
    let start = layout::start();
    // A local lives on the stack: if the stack lay above the data, it would be part of the
    // range copied, and writing it back would overwrite the frame doing the writing.
    let marker = 0u8;
    if (&raw const marker) as usize >= start {
        return Err(String::from(
            "the worker's stack does not come first in its memory (link with --stack-first)",
        ));
    }
    let words = |address: usize| u32::try_from(address).unwrap_or(u32::MAX);
    Ok(Extent {
        start: words(start),
        end: words(layout::end()),
        zeroed_from: words(layout::zeroed_from()),
    })
}

/// The interface's `read`.
#[cfg(target_arch = "wasm32")]
pub fn read(at: u32) -> Chunk {
    let at = at as usize;
    if at < layout::start() {
        core::arch::wasm32::unreachable();
    }
    let mut words = [0u64; WORDS];
    let readable = layout::memory_end().saturating_sub(at).min(CHUNK_BYTES);
    // SAFETY: `readable` bytes from `at` lie inside linear memory, past the stack; copied as
    // bytes, with no type's promises.
    unsafe {
        core::ptr::copy_nonoverlapping(at as *const u8, words.as_mut_ptr().cast::<u8>(), readable);
    }
    to_chunk(words)
}

/// The interface's `prepare`.
#[cfg(target_arch = "wasm32")]
pub fn prepare(extent: Extent) -> Result<(), String> {
    if extent.start as usize != layout::start()
        || extent.zeroed_from as usize != layout::zeroed_from()
    {
        return Err(String::from(
            "the checkpoint was taken from another module: its memory layout differs",
        ));
    }
    if extent.end < extent.start || !layout::reach(extent.end as usize) {
        return Err(String::from(
            "the checkpoint's heap does not fit this task's memory cap",
        ));
    }
    Ok(())
}

/// The interface's `write`.
#[cfg(target_arch = "wasm32")]
pub fn write(at: u32, chunk: Chunk) {
    let at = at as usize;
    if at < layout::start() {
        core::arch::wasm32::unreachable();
    }
    let words = from_chunk(&chunk);
    let writable = layout::memory_end().saturating_sub(at).min(CHUNK_BYTES);
    // SAFETY: `writable` bytes from `at` lie inside linear memory, past the stack. This
    // overwrites the worker's data and heap behind the compiler's back, which is the point: no
    // frame but this one is live, and this one keeps its locals on the stack.
    unsafe {
        core::ptr::copy_nonoverlapping(words.as_ptr().cast::<u8>(), at as *mut u8, writable);
    }
}

/// The same exports off wasm32, for the crate's tests and docs: nothing to checkpoint.
#[cfg(not(target_arch = "wasm32"))]
pub fn locate() -> Result<Extent, alloc::string::String> {
    Err("checkpoints exist only on wasm32".into())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn read(_at: u32) -> Chunk {
    to_chunk([0; WORDS])
}

#[cfg(not(target_arch = "wasm32"))]
pub fn prepare(_extent: Extent) -> Result<(), alloc::string::String> {
    Err("checkpoints exist only on wasm32".into())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn write(_at: u32, _chunk: Chunk) {}

/// Words in a chunk.
const WORDS: usize = CHUNK_BYTES / 8;

fn to_chunk(w: [u64; WORDS]) -> Chunk {
    Chunk {
        w0: w[0],
        w1: w[1],
        w2: w[2],
        w3: w[3],
        w4: w[4],
        w5: w[5],
        w6: w[6],
        w7: w[7],
        w8: w[8],
        w9: w[9],
        w10: w[10],
        w11: w[11],
        w12: w[12],
        w13: w[13],
        w14: w[14],
    }
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "used on wasm32 and in tests")
)]
fn from_chunk(c: &Chunk) -> [u64; WORDS] {
    [
        c.w0, c.w1, c.w2, c.w3, c.w4, c.w5, c.w6, c.w7, c.w8, c.w9, c.w10, c.w11, c.w12, c.w13,
        c.w14,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_carries_its_words_both_ways() {
        let words: [u64; WORDS] = core::array::from_fn(|i| (i as u64) << 40 | i as u64);
        assert_eq!(from_chunk(&to_chunk(words)), words);
    }
}
