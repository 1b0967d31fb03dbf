//! Page-aligned buffers for the write batches, mapped straight from the
//! kernel and kept in a bounded pool. Outside malloc's arenas they neither
//! fragment them nor get returned and faulted in again batch after batch:
//! a fresh mapping costs page faults that zero it as it fills, and an
//! unmapping flushes every core's TLB.

use std::ptr::NonNull;
use std::sync::Mutex;

/// Segments all synced requests together may hold (8 MiB): with many
/// uploads at once each still holds up to its `Shape`'s share, but
/// together they wait for the disk and the hasher instead of growing
/// memory past the budget (64 uploads at once holding three each would
/// take 25 MiB). A held segment is given back once hashed and written,
/// which never waits for another request, and a request writes its
/// incomplete group before it waits for the budget, so waiting for it
/// cannot deadlock. Too few cost memory too: a request that waits keeps
/// its connection's read buffers full, two or three of about 132 KiB
/// each, more than the segment it waits for (the sizes tried are in
/// docs/benchmarks/tuning.md).
pub(super) const SEGMENT_BUDGET: usize = 64;

/// Buffers kept for reuse: as many as requests may hold at once (the
/// segment budget), so none is ever unmapped in use.
const POOLED: usize = SEGMENT_BUDGET;

static POOL: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());

/// One anonymous mapping, unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` owns its memory alone, like a `Box<[u8]>`.
unsafe impl Send for Mapping {}
// SAFETY: shared access is only through `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> Mapping {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("a valid layout");
        // SAFETY: a new private anonymous mapping; no memory of ours is
        // touched.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(layout);
        }
        match NonNull::new(mapped.cast()) {
            Some(ptr) => Mapping { ptr, len },
            None => std::alloc::handle_alloc_error(layout),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// `len` bytes of page-aligned memory, back to the pool when dropped.
pub struct Pages(Option<Mapping>);

impl Pages {
    /// Memory of `len` bytes (a multiple of the page size): a pooled buffer
    /// of that size, or a new mapping. Its bytes are whatever it last held.
    pub fn take(len: usize) -> Pages {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let pooled = match pool.iter().position(|mapping| mapping.len == len) {
            Some(found) => pool.swap_remove(found),
            None => {
                drop(pool);
                Mapping::new(len)
            }
        };
        Pages(Some(pooled))
    }

    fn mapping(&self) -> &Mapping {
        self.0.as_ref().expect("pages are mapped until dropped")
    }
}

impl std::ops::Deref for Pages {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let mapping = self.mapping();
        // SAFETY: the mapping is `len` readable bytes and lives as long as
        // `self`.
        unsafe { std::slice::from_raw_parts(mapping.ptr.as_ptr(), mapping.len) }
    }
}

impl std::ops::DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [u8] {
        let mapping = self.mapping();
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(mapping.ptr.as_ptr(), mapping.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        let Some(mapping) = self.0.take() else {
            return;
        };
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOLED {
            pool.push(mapping);
        }
    }
}
