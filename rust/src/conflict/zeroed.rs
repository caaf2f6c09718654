//! A fixed-size array allocated zeroed, backed by huge pages where the system offers them.
//!
//! The conflict table is read at random: with 4 KiB pages a table of 16 MB spans 4,096 pages, more
//! than the CPU's TLB holds, so nearly every lookup also walks the page tables. On Linux an array
//! of at least [`HUGE_PAGE`] bytes is mapped on its own, aligned to [`HUGE_PAGE`], and advised
//! `MADV_HUGEPAGE` before anything touches it: with transparent huge pages in `madvise` or
//! `always` mode, 16 MB is 8 pages. The advice is a hint: where it is refused (THP off) the array
//! works on small pages. Elsewhere, and for smaller arrays, it is an ordinary zeroed allocation.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size the mapping is aligned to (x86_64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;
/// The smallest page: [`ZeroedArray::prefault`] touches one byte in each.
const PAGE: usize = 4 << 10;

/// A type whose all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for types made of integers (and arrays of them), with no padding
/// requirements beyond that: [`ZeroedArray`] hands out references to zeroed memory as `T`.
pub unsafe trait Zeroable: Copy {}

/// The array could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationError;

enum Backing {
    /// A mapping of its own: `base` and `bytes` as `mmap` returned them, for `munmap`.
    #[cfg(target_os = "linux")]
    Mapped {
        base: NonNull<libc::c_void>,
        bytes: usize,
    },
    /// The global allocator's block, with its layout (no block when the layout is empty).
    Heap(Layout),
}

pub struct ZeroedArray<T: Zeroable> {
    items: NonNull<T>,
    len: usize,
    backing: Backing,
}

// SAFETY: the array owns its memory exclusively, like a `Box<[T]>`.
unsafe impl<T: Zeroable + Send> Send for ZeroedArray<T> {}
// SAFETY: shared access gives out only `&[T]`.
unsafe impl<T: Zeroable + Sync> Sync for ZeroedArray<T> {}

impl<T: Zeroable> ZeroedArray<T> {
    /// `len` zeroed items.
    pub fn new(len: usize) -> Result<Self, AllocationError> {
        let layout = Layout::array::<T>(len).map_err(|_| AllocationError)?;
        #[cfg(target_os = "linux")]
        if layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE {
            return Self::mapped(len, layout.size());
        }
        Self::heap(len, layout)
    }

    fn heap(len: usize, layout: Layout) -> Result<Self, AllocationError> {
        let items = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout's size is not zero.
            let block = unsafe { std::alloc::alloc_zeroed(layout) };
            NonNull::new(block.cast::<T>()).ok_or(AllocationError)?
        };
        Ok(Self {
            items,
            len,
            backing: Backing::Heap(layout),
        })
    }

    /// A private anonymous mapping (zeroed by the kernel as pages are first touched), with
    /// room to start the array at a huge page boundary.
    #[cfg(target_os = "linux")]
    fn mapped(len: usize, size: usize) -> Result<Self, AllocationError> {
        let bytes = size.checked_add(HUGE_PAGE).ok_or(AllocationError)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is named.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(AllocationError);
        }
        let base = NonNull::new(base).ok_or(AllocationError)?;
        let skip = (HUGE_PAGE - base.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
        // SAFETY: `skip + size <= bytes`, so the array lies inside the mapping.
        let start = unsafe { base.as_ptr().cast::<u8>().add(skip) };
        // SAFETY: advice about pages of our own mapping; it changes no contents. A refusal
        // (no transparent huge pages) leaves small pages, which work the same.
        unsafe { libc::madvise(start.cast(), size, libc::MADV_HUGEPAGE) };
        let items = NonNull::new(start.cast::<T>()).ok_or(AllocationError)?;
        Ok(Self {
            items,
            len,
            backing: Backing::Mapped { base, bytes },
        })
    }

    /// Touches every page of the array now (writing a zero to one byte of each 4 KiB, which
    /// changes no contents), so that later first touches fault nothing in: the kernel's zeroing
    /// of a fresh mapping (tens to hundreds of milliseconds for the default tables, on a busy
    /// host) is paid here instead of by the first calls that use it.
    pub fn prefault(&mut self) {
        let bytes = self.len * std::mem::size_of::<T>();
        let start = self.items.as_ptr().cast::<u8>();
        let mut offset = 0;
        while offset < bytes {
            // SAFETY: `offset < bytes`, inside the array this value owns (`&mut self`); every
            // byte of a `Zeroable` array may hold zero, and this one already does or keeps the
            // byte it held (a read, then the same value written back).
            unsafe {
                let byte = start.add(offset);
                std::ptr::write_volatile(byte, std::ptr::read_volatile(byte));
            }
            offset += PAGE;
        }
    }

    /// Whether the array has a huge-page-aligned mapping of its own (the huge pages themselves
    /// are the kernel's choice).
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        match self.backing {
            #[cfg(target_os = "linux")]
            Backing::Mapped { .. } => true,
            Backing::Heap(_) => false,
        }
    }
}

impl<T: Zeroable> Deref for ZeroedArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `items` points at `len` initialised (zeroed, then written as `T`) items that
        // this array owns, aligned for `T`.
        unsafe { std::slice::from_raw_parts(self.items.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> DerefMut for ZeroedArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.items.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for ZeroedArray<T> {
    fn drop(&mut self) {
        match self.backing {
            #[cfg(target_os = "linux")]
            Backing::Mapped { base, bytes } => {
                // SAFETY: the mapping `mmap` returned, unmapped once; nothing borrows it now.
                unsafe { libc::munmap(base.as_ptr(), bytes) };
            }
            Backing::Heap(layout) => {
                if layout.size() != 0 {
                    // SAFETY: the block `alloc_zeroed` returned for this layout.
                    unsafe { std::alloc::dealloc(self.items.as_ptr().cast(), layout) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAFETY: an integer.
    unsafe impl Zeroable for u64 {}

    #[test]
    fn prefaulting_keeps_every_item() {
        for len in [0, 1, 1_000, 3 * HUGE_PAGE / 8 + 5] {
            let mut array = ZeroedArray::<u64>::new(len).unwrap();
            array.prefault();
            assert!(array.iter().all(|&x| x == 0));
            for (n, x) in array.iter_mut().enumerate().step_by(7) {
                *x = n as u64 + 1;
            }
            array.prefault();
            assert!(array
                .iter()
                .enumerate()
                .all(|(n, &x)| x == if n % 7 == 0 { n as u64 + 1 } else { 0 }));
        }
    }

    #[test]
    fn small_and_large_arrays_start_zeroed_and_keep_writes() {
        for len in [0, 1, 1_000, HUGE_PAGE / 8, 3 * HUGE_PAGE / 8 + 5] {
            let mut array = ZeroedArray::<u64>::new(len).unwrap();
            assert_eq!(array.len(), len);
            assert!(array.iter().all(|&x| x == 0));
            for (n, x) in array.iter_mut().enumerate() {
                *x = n as u64;
            }
            assert!(array.iter().enumerate().all(|(n, &x)| x == n as u64));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_array_is_mapped_at_a_huge_page_boundary() {
        let array = ZeroedArray::<u64>::new(HUGE_PAGE / 8).unwrap();
        assert!(array.is_mapped());
        assert_eq!(array.as_ptr() as usize % HUGE_PAGE, 0);
        assert!(!ZeroedArray::<u64>::new(1_000).unwrap().is_mapped());
    }

    #[test]
    fn an_impossible_size_is_an_error() {
        assert!(ZeroedArray::<u64>::new(usize::MAX).is_err());
    }
}
