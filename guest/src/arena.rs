//! The default worker's allocator: a bump allocator over a fixed arena in `.bss`, which gives
//! memory back when the most recent allocation is freed (last in, first out).
//!
//! A task's allocations are few and mostly nested: the strings of its spec, a formatted log
//! line, its state. This keeps them packed in the page right after the worker's data, so a
//! sleeping task touches one page of linear memory (stack top, data and heap together) instead
//! of the four or five that a general allocator's first heap page and bookkeeping, libc's data
//! and a deep stack make it touch. Allocations that
//! outlive later ones keep their space until the task ends; the arena is sized for a worker
//! that does not allocate per step. Running out is an allocation failure, which traps.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

/// Arena size. It sits in `.bss`, so pages the task never writes cost nothing.
const ARENA_BYTES: usize = 64 * 1024;

struct Arena {
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
    /// Offset of the first free byte.
    used: UnsafeCell<usize>,
}

// SAFETY: a wasm component instance is single-threaded; the arena is never shared.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena {
    bytes: UnsafeCell::new([0; ARENA_BYTES]),
    used: UnsafeCell::new(0),
};

impl Arena {
    fn base(&self) -> usize {
        self.bytes.get() as usize
    }
}

// SAFETY: blocks are carved from the arena without overlap: each starts at or after the end
// of every live block (the bump offset only moves back over the block being freed, when it is
// the last one), is aligned as asked, and lies wholly inside the arena or is refused (null).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync`), and no reference to `used` outlives this call.
        let used = unsafe { &mut *self.used.get() };
        let start = (self.base() + *used).next_multiple_of(layout.align());
        let Some(end) = start.checked_add(layout.size()) else {
            return null_mut();
        };
        if end > self.base() + ARENA_BYTES {
            return null_mut();
        }
        *used = end - self.base();
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        let used = unsafe { &mut *self.used.get() };
        if ptr as usize + layout.size() == self.base() + *used {
            *used = ptr as usize - self.base();
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let used = unsafe { &mut *self.used.get() };
        // The last block grows or shrinks in place.
        if ptr as usize + layout.size() == self.base() + *used
            && (ptr as usize)
                .checked_add(new_size)
                .is_some_and(|end| end <= self.base() + ARENA_BYTES)
        {
            *used = ptr as usize + new_size - self.base();
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
/// With `std`, wasi-libc provides it on this target; without, the worker does.
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
