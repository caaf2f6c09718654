//! A growable buffer whose first `N` elements live inside it: the storage of a key set, so that
//! the common small set sits in its transaction, and a message's transactions (kept side by side
//! in one vector) are one contiguous run of memory for the writer thread to walk, instead of
//! several scattered heap buffers each.
//!
//! Past `N` elements the contents move to a heap vector. When the buffer is cleared, that vector
//! is kept (empty) for the next time: a buffer reused for many sets allocates only while its
//! largest set grows, never per set. (`smallvec`'s `SmallVec` does not: once spilled it stays on
//! the heap after a clear, so a slot that once held a large set would leave the contiguous run for
//! good, or, shrunk back, allocate again for every large set.)

use std::fmt;

/// Up to `N` elements inline, more on the heap (see the module's note). Small beside its
/// elements: a length, a flag and one pointer.
#[derive(Clone)]
pub struct InlineBuffer<T: Copy + Default, const N: usize> {
    /// Elements in `inline` (while not `spilled`).
    len: u32,
    /// The elements are in `heap`: they outgrew `inline` since the buffer was last cleared.
    spilled: bool,
    inline: [T; N],
    /// Allocated the first time the elements outgrow `inline`, and kept (emptied) after.
    #[expect(
        clippy::box_collection,
        reason = "one word in every buffer instead of a vector's three; only spilled sets read it"
    )]
    heap: Option<Box<Vec<T>>>,
}

impl<T: Copy + Default, const N: usize> Default for InlineBuffer<T, N> {
    fn default() -> Self {
        const { assert!(N <= u32::MAX as usize) };
        Self {
            len: 0,
            spilled: false,
            inline: [T::default(); N],
            heap: None,
        }
    }
}

impl<T: Copy + Default, const N: usize> InlineBuffer<T, N> {
    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        if !self.spilled {
            &self.inline[..self.len as usize]
        } else {
            self.heap.as_deref().map_or(&[], Vec::as_slice)
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        if !self.spilled {
            self.len as usize
        } else {
            self.heap.as_deref().map_or(0, Vec::len)
        }
    }

    /// Empties the buffer, keeping its heap vector for the next time.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
        self.spilled = false;
    }

    #[inline(always)]
    pub fn push(&mut self, value: T) {
        self.extend_from_slice(std::slice::from_ref(&value));
    }

    #[inline(always)]
    pub fn extend_from_slice(&mut self, values: &[T]) {
        self.extend_from_pair(&[], values);
    }

    /// Appends `head` then `tail` (one check for room: a key set appends a key's length and the
    /// key).
    #[inline(always)]
    pub fn extend_from_pair(&mut self, head: &[T], tail: &[T]) {
        if !self.spilled {
            // No overflow: `len` is at most `N`, and slices are at most `isize::MAX` long.
            let start = self.len as usize;
            let middle = start + head.len();
            let end = middle + tail.len();
            if end <= N {
                copy_short(&mut self.inline[start..middle], head);
                copy_short(&mut self.inline[middle..end], tail);
                self.len = end as u32;
                return;
            }
            self.spill();
        }
        // Always there once spilled.
        if let Some(heap) = self.heap.as_deref_mut() {
            heap.extend_from_slice(head);
            heap.extend_from_slice(tail);
        }
    }

    /// Moves the inline elements to the heap vector (allocated the first time).
    #[cold]
    #[inline(never)]
    fn spill(&mut self) {
        let heap = self.heap.get_or_insert_with(Box::default);
        heap.clear();
        heap.reserve(2 * N);
        heap.extend_from_slice(&self.inline[..self.len as usize]);
        self.spilled = true;
    }
}

/// Copies `from` into `to` (of the same length). A run of 4 to 16 elements is copied as two
/// overlapping fixed-size copies, which compile to a few moves, instead of a call to `memcpy`
/// (most keys are that short).
#[inline(always)]
fn copy_short<T: Copy>(to: &mut [T], from: &[T]) {
    let n = from.len();
    if (8..=16).contains(&n) && to.len() == n {
        to[..8].copy_from_slice(&from[..8]);
        to[n - 8..].copy_from_slice(&from[n - 8..]);
    } else if (4..8).contains(&n) && to.len() == n {
        to[..4].copy_from_slice(&from[..4]);
        to[n - 4..].copy_from_slice(&from[n - 4..]);
    } else {
        to.copy_from_slice(from);
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for InlineBuffer<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for InlineBuffer<T, N> {}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for InlineBuffer<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_past_its_inline_room_and_keeps_the_heap_when_cleared() {
        let mut buffer = InlineBuffer::<u8, 4>::default();
        buffer.extend_from_pair(b"ab", b"c");
        assert_eq!(buffer.as_slice(), b"abc");
        buffer.extend_from_slice(b"de");
        buffer.push(b'f');
        assert_eq!((buffer.as_slice(), buffer.len()), (&b"abcdef"[..], 6));
        let capacity = buffer.heap.as_ref().map(|heap| heap.capacity());
        buffer.clear();
        assert_eq!(buffer.len(), 0);
        buffer.extend_from_slice(b"xy");
        assert_eq!(buffer.as_slice(), b"xy");
        buffer.extend_from_slice(b"zzzz");
        assert_eq!(buffer.as_slice(), b"xyzzzz");
        assert_eq!(buffer.heap.as_ref().map(|heap| heap.capacity()), capacity);
        // Equal contents are equal wherever they are kept.
        let mut inline = InlineBuffer::<u8, 4>::default();
        inline.extend_from_slice(b"xy");
        buffer.clear();
        buffer.extend_from_slice(b"xy");
        assert_eq!(inline, buffer);
        buffer.extend_from_slice(b"123");
        buffer.clear();
        assert_eq!(InlineBuffer::<u8, 4>::default(), buffer);
    }

    #[test]
    fn copies_runs_of_every_length() {
        let source: Vec<u8> = (0..40).collect();
        for length in 0..40 {
            let mut buffer = InlineBuffer::<u8, 24>::default();
            buffer.extend_from_pair(&source[..1], &source[..length]);
            assert_eq!(buffer.as_slice()[1..], source[..length], "{length}");
        }
    }
}
