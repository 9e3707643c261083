//! Heap use, counted by a global allocator, for oracles that bound memory.
//!
//! A target that checks memory installs [`Counting`] as its global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: gangway_fuzz::memory::Counting = gangway_fuzz::memory::Counting;
//! ```
//!
//! [`Peak`] then measures the most the heap held at once, and what it still holds, above what
//! it held when the measurement began. Counts are per thread (libFuzzer runs the target on one
//! thread; tests run side by side on several), so memory freed by another thread than the one
//! that allocated it skews both. Without the allocator installed nothing is counted and every
//! check passes.

// The allocator forwards to the system's: the one place with unsafe code in this crate.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread allocated and has not freed (negative if it freed another's).
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    /// The most `CURRENT` was since the last [`Peak::start`].
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting the bytes it holds.
#[derive(Debug)]
pub struct Counting;

// SAFETY: every call goes to the system allocator with the caller's arguments unchanged, and
// its result is returned unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (that is, `System`) gave, with its
        // layout.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and the caller's `new_size` is valid for `layout`'s alignment.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        new
    }
}

fn grow(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    // Not during the thread's teardown, when its counters are gone.
    let _ = CURRENT.try_with(|current| {
        let now = current.get().wrapping_add(bytes);
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrink(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    let _ = CURRENT.try_with(|current| current.set(current.get().wrapping_sub(bytes)));
}

fn current() -> isize {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

/// A measurement of this thread's heap from now on (one at a time: starting one restarts the
/// peak).
#[derive(Debug)]
pub struct Peak {
    start: isize,
}

impl Peak {
    /// Start measuring.
    pub fn start() -> Peak {
        let start = current();
        let _ = PEAK.try_with(|peak| peak.set(start));
        Peak { start }
    }

    /// The most the heap held at once since [`start`](Self::start), above what it held then.
    pub fn growth(&self) -> usize {
        let peak = PEAK.try_with(Cell::get).unwrap_or(self.start);
        usize::try_from(peak.wrapping_sub(self.start)).unwrap_or(0)
    }

    /// What the heap holds now above what it held at the start.
    pub fn retained(&self) -> usize {
        usize::try_from(current().wrapping_sub(self.start)).unwrap_or(0)
    }

    /// Panic if the heap grew by more than `budget` bytes at any moment, or still holds more
    /// than `retained` bytes of what was allocated since the start.
    pub fn check(self, budget: usize, retained: usize) {
        let (growth, held) = (self.growth(), self.retained());
        assert!(
            growth <= budget,
            "the heap grew by {growth} bytes, over the budget of {budget}"
        );
        assert!(
            held <= retained,
            "{held} bytes remain allocated, over the {retained} allowed"
        );
    }
}
