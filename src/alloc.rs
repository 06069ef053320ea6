//! The global allocator: mimalloc, asked for alignment only when needed.
//!
//! The `mimalloc` crate hands every allocation to mimalloc's aligned entry
//! points, whose checks (and, for blocks over a kilobyte, whose slow path)
//! cost a noticeable share of a report's time, since nearly all of Rust's
//! allocations need no more alignment than every mimalloc block has. This
//! allocator uses the plain entry points for those, and the aligned ones
//! for the rest.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every block mimalloc returns: that of a pointer.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc, calling its aligned functions only for alignments above
/// [`BLOCK_ALIGN`].
pub struct Mimalloc;

// SAFETY: every function passes the layout's size and, where mimalloc's
// plain functions would not guarantee it, its alignment to mimalloc, which
// returns null on failure as `GlobalAlloc` requires; memory from any of
// them is freed by `mi_free`.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}
