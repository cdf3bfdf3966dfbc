//! A counting allocator for the unit tests: the heap bytes one thread holds at its peak while a
//! closure runs, so memory bounds (JSON trees, decoded tensors) are checked against what was
//! really allocated. Other threads' allocations are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no locals left; its frees are not ours to count.
    let _ = ON.try_with(|on| {
        if on.get() {
            LIVE.with(|l| {
                l.set(l.get() + delta);
                PEAK.with(|p| p.set(p.get().max(l.get())));
            });
        }
    });
}

// SAFETY: every call is passed straight to the system allocator; counting only reads and writes
// this thread's own cells and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through us).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A moving realloc holds both blocks for a moment: count the new one first.
        count(new_size as isize);
        // SAFETY: as for `dealloc`; the new size is the caller's, checked by `realloc`'s contract.
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        count(-(layout.size() as isize));
        out
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the most heap bytes this thread held above the start.
pub fn peak_heap_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}
