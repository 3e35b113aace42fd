//! The global allocator: mimalloc, entered the way its own `malloc` is.
//!
//! Written here rather than taken from the `mimalloc` crate, whose `GlobalAlloc` sends
//! every allocation through `mi_malloc_aligned`, whatever its alignment. That entry's
//! fast path serves only blocks of up to 1 KiB whose free block happens to be aligned;
//! anything larger (a request body, a prompt, a record's JSON) goes through its generic
//! aligned path, and sizes that are not a power of two through over-allocation, at about
//! 200 instructions where `mi_malloc` takes about 20 (callgrind, docs/benchmarks.md).
//! Every mimalloc block is at least word-aligned, so a layout whose alignment is at most
//! a word is served by the plain entries, as `std`'s system allocator does with
//! `malloc`; larger alignments (tokio's cache-padded task cells) keep the aligned ones.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Whether `layout` is served by mimalloc's plain entries: every mimalloc block is
/// aligned to at least a machine word.
fn plain(layout: &Layout) -> bool {
    layout.align() <= std::mem::size_of::<usize>()
}

pub struct MiMalloc;

// SAFETY: mimalloc's entries are thread-safe and return null on failure, as GlobalAlloc
// requires; a block from either entry is freed by `mi_free`, and a block is reallocated
// by the entry of the same kind as the one that made it (both keyed on the layout's
// alignment, which GlobalAlloc's caller keeps the same).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(&layout) {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned, zeroed when asked,
    /// and keeps its bytes across a reallocation to another size class.
    #[test]
    fn blocks_are_aligned_zeroed_and_kept() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 100, 1000, 1025, 1280, 5000, 70_000, 300_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xAB, size);
                    let bigger = size * 3 + 5;
                    let q = a.realloc(p, layout, bigger);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc size {bigger} align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xAB));
                    a.dealloc(q, Layout::from_size_align(bigger, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
