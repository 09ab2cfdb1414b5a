//! The bookkeeping of the `no_std` allocator (see `arena.rs`), as plain arithmetic on
//! addresses, so that it can be tested on any target.
//!
//! A bump pointer, which moves back when the block just below it is freed, and over blocks freed
//! earlier that then end at it. Those are remembered in a few slots, merged with a neighbour
//! where they touch one: the strings of one message or one notice are allocated together and
//! freed in the order they were allocated, first in, first out, and would otherwise stay lost.

/// How many freed blocks below the bump pointer are remembered. Beyond that, a block's space is
/// lost until the task ends.
const HOLES: usize = 8;

/// A bump allocator over addresses.
#[derive(Debug)]
pub(crate) struct Bump {
    /// Address of the first free byte; 0 until the owner sets where the heap starts.
    pub(crate) top: usize,
    /// Freed blocks below `top`, as `start..end`.
    holes: [Option<(usize, usize)>; HOLES],
}

impl Bump {
    pub(crate) const fn new() -> Self {
        Self {
            top: 0,
            holes: [None; HOLES],
        }
    }

    /// A block of `size` bytes aligned to `align` (a power of two), or `None` if `reach`, asked
    /// to make memory extend to the block's end, cannot.
    pub(crate) fn alloc(
        &mut self,
        size: usize,
        align: usize,
        reach: impl FnOnce(usize) -> bool,
    ) -> Option<usize> {
        let start = self.top.checked_next_multiple_of(align)?;
        let end = start.checked_add(size)?;
        if !reach(end) {
            return None;
        }
        self.top = end;
        Some(start)
    }

    /// Frees the block `start..start + size`.
    pub(crate) fn free(&mut self, start: usize, size: usize) {
        let end = start + size;
        if size == 0 {
            return;
        }
        if end == self.top {
            self.top = start;
            while let Some(hole) = self
                .holes
                .iter_mut()
                .find(|hole| hole.is_some_and(|(_, end)| end == self.top))
            {
                if let Some((start, _)) = hole.take() {
                    self.top = start;
                }
            }
            return;
        }
        for hole in self.holes.iter_mut().flatten() {
            if hole.1 == start {
                hole.1 = end;
                return;
            }
            if hole.0 == end {
                hole.0 = start;
                return;
            }
        }
        if let Some(slot) = self.holes.iter_mut().find(|hole| hole.is_none()) {
            *slot = Some((start, end));
        }
    }

    /// Resizes the block `start..start + old_size` in place to `new_size`, if it is the last
    /// one and `reach` can make memory extend to its new end.
    pub(crate) fn resize_in_place(
        &mut self,
        start: usize,
        old_size: usize,
        new_size: usize,
        reach: impl FnOnce(usize) -> bool,
    ) -> bool {
        if start + old_size != self.top {
            return false;
        }
        match start.checked_add(new_size) {
            Some(end) if reach(end) => {
                self.top = end;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 1_000;

    fn bump() -> Bump {
        let mut bump = Bump::new();
        bump.top = BASE;
        bump
    }

    fn alloc(bump: &mut Bump, size: usize, align: usize) -> usize {
        bump.alloc(size, align, |_| true).expect("room")
    }

    #[test]
    fn blocks_are_aligned_and_packed() {
        let mut bump = bump();
        assert_eq!(alloc(&mut bump, 3, 1), BASE);
        assert_eq!(alloc(&mut bump, 8, 8), 1_008);
        assert_eq!(alloc(&mut bump, 1, 1), 1_016);
        assert_eq!(bump.top, 1_017);
    }

    #[test]
    fn memory_that_cannot_grow_refuses_the_block() {
        let mut bump = bump();
        assert_eq!(bump.alloc(10, 1, |end| end <= BASE + 8), None);
        assert_eq!(bump.top, BASE, "nothing taken");
        assert_eq!(bump.alloc(usize::MAX, 1, |_| true), None);
    }

    #[test]
    fn freeing_the_last_block_gives_it_back() {
        let mut bump = bump();
        let a = alloc(&mut bump, 10, 1);
        let b = alloc(&mut bump, 20, 1);
        bump.free(b, 20);
        assert_eq!(bump.top, a + 10);
        bump.free(a, 10);
        assert_eq!(bump.top, BASE);
    }

    #[test]
    fn blocks_freed_in_allocation_order_come_back_together() {
        let mut bump = bump();
        let kept = alloc(&mut bump, 16, 8);
        let sender = alloc(&mut bump, 10, 1);
        let body = alloc(&mut bump, 100, 1);
        bump.free(sender, 10);
        assert_eq!(bump.top, body + 100, "the body is still live");
        bump.free(body, 100);
        assert_eq!(bump.top, kept + 16);
    }

    #[test]
    fn neighbouring_holes_merge() {
        let mut bump = bump();
        let blocks: [usize; 12] = core::array::from_fn(|_| alloc(&mut bump, 4, 1));
        // More holes than slots, but each touches the one before.
        for &block in &blocks[..11] {
            bump.free(block, 4);
        }
        bump.free(blocks[11], 4);
        assert_eq!(bump.top, BASE);
    }

    #[test]
    fn a_hole_under_a_live_block_stays_until_it_is_freed() {
        let mut bump = bump();
        let a = alloc(&mut bump, 4, 1);
        let b = alloc(&mut bump, 4, 1);
        let c = alloc(&mut bump, 4, 1);
        bump.free(a, 4);
        bump.free(c, 4);
        assert_eq!(bump.top, b + 4);
        bump.free(b, 4);
        assert_eq!(bump.top, BASE);
    }

    #[test]
    fn the_last_block_resizes_in_place() {
        let mut bump = bump();
        let a = alloc(&mut bump, 4, 1);
        let b = alloc(&mut bump, 4, 1);
        assert!(!bump.resize_in_place(a, 4, 8, |_| true), "not the last");
        assert!(bump.resize_in_place(b, 4, 40, |_| true));
        assert_eq!(bump.top, b + 40);
        assert!(!bump.resize_in_place(b, 40, 80, |end| end <= b + 60));
        assert!(bump.resize_in_place(b, 40, 2, |_| true));
        assert_eq!(bump.top, b + 2);
    }
}
