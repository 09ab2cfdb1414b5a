//! The allocator of a `no_std` worker (the SDK without its `std` feature, on wasm32): a bump
//! allocator over the heap, from the linker's `__heap_base` up, which gives memory back when
//! the most recent allocation is freed (last in, first out, with a few blocks freed out of
//! order remembered: see `bump.rs`), and grows linear memory when it runs out.
//!
//! A task's allocations are few and mostly nested: the strings of its spec, its future, a log
//! line built and dropped, a message received and dropped. This keeps them packed right after
//! the worker's data, so a worker with a small stack (the default worker's `build.rs` sets
//! 2 KiB) declares one 64 KiB page of linear memory and touches one 4 KiB page of it while it
//! sleeps (stack top, data and heap together), instead of the four or five that a general
//! allocator's first heap page and bookkeeping, libc's data and a deep stack make it touch.
//! Allocations that outlive later ones keep their space until the task ends: the allocator
//! suits a worker that does not keep allocations from step to step. When the host's memory
//! limit refuses to grow memory, the allocation fails, which traps.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32::{memory_grow, memory_size};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

use crate::bump::Bump;

/// A wasm page.
const PAGE_BYTES: usize = 64 * 1024;

unsafe extern "C" {
    /// Where the linker put the end of the stack and data: the heap starts here.
    static __heap_base: u8;
}

struct Arena(UnsafeCell<Bump>);

// SAFETY: a wasm component instance is single-threaded; the arena is never shared.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena(UnsafeCell::new(Bump::new()));

impl Arena {
    /// The bookkeeping, its heap starting at `__heap_base` from the first call on.
    ///
    /// # Safety
    /// Single-threaded (see `Sync`), and the reference must not outlive the allocator call.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bump(&self) -> &mut Bump {
        // SAFETY: as the caller promises.
        let bump = unsafe { &mut *self.0.get() };
        if bump.top == 0 {
            bump.top = (&raw const __heap_base) as usize;
        }
        bump
    }
}

/// Makes linear memory reach `end` (an address), growing it if needed; false if it cannot.
fn reach(end: usize) -> bool {
    let size = memory_size(0) * PAGE_BYTES;
    end <= size || memory_grow(0, (end - size).div_ceil(PAGE_BYTES)) != usize::MAX
}

// SAFETY: `Bump` hands out blocks without overlap: each starts at or after the end of every
// live block (its pointer only moves back over blocks that were freed), is aligned as asked,
// and lies wholly inside linear memory (`reach`) or is refused (null).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: within this call only.
        let bump = unsafe { self.bump() };
        bump.alloc(layout.size(), layout.align(), reach)
            .map_or(null_mut(), |start| start as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: within this call only.
        let bump = unsafe { self.bump() };
        bump.free(ptr as usize, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: within this call only.
        let bump = unsafe { self.bump() };
        if bump.resize_in_place(ptr as usize, layout.size(), new_size, reach) {
            return ptr;
        }
        // SAFETY: `layout` describes `ptr`'s block, as `realloc`'s contract requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block from this arena, then the old one returned.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// `memcmp` for string searches and comparisons: without libc nothing provides it on this
/// target. Volatile reads keep the compiler from recognising the loop as `memcmp` and calling
/// itself.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes, as C's `memcmp` requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: in bounds by the caller's contract.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`, which LLVM emits for equality-only comparisons.
///
/// # Safety
/// As for [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// The canonical ABI's allocator, through which the host hands the guest strings and lists.
/// With `std`, wasi-libc provides it on this target; without, the SDK does.
///
/// # Safety
/// Called by the host per the component model's canonical ABI: `old_ptr`/`old_len` describe a
/// block this function returned before (or are null/0), and `align` is a power of two.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    let (Ok(layout), Ok(old)) = (
        Layout::from_size_align(new_len, align),
        Layout::from_size_align(old_len, align),
    ) else {
        core::arch::wasm32::unreachable();
    };
    // SAFETY: the canonical ABI hands back a block this function returned, with its size.
    let block = unsafe {
        if old_ptr.is_null() {
            ARENA.alloc(layout)
        } else {
            ARENA.realloc(old_ptr, old, new_len)
        }
    };
    if block.is_null() {
        core::arch::wasm32::unreachable();
    }
    block
}

/// One past the last byte the arena has handed out: the end of the heap in use.
pub(crate) fn top() -> usize {
    // SAFETY: within this call only, on the instance's one thread.
    unsafe { ARENA.bump() }.top
}
