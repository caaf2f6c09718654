//! Vector clocks: a map from node id to event counter, ordered by pointwise comparison.
//!
//! Guarantees:
//! - `a.compare(b)` is `Before` when every counter of `a` is `<=` the one of `b` and at least one is
//!   smaller, `After` symmetrically, `Equal` when all agree, and `Concurrent` otherwise: a partial
//!   order in which neither clock saw all the events of the other.
//! - `merge` is the pointwise maximum: commutative, associative, idempotent; after `a.merge(b)`,
//!   `a` dominates both.
//! - A missing node has counter 0, and a counter of 0 is never stored, so equal clocks have equal
//!   entries, equal bytes and equal dicts.
//!
//! Representation: entries `(node, counter)` sorted by node in one `Vec`, so compare and merge are
//! one linear walk over both clocks with no hashing; clocks in practice have a few to a few dozen
//! nodes.
//!
//! Byte form (`to_bytes`), canonical so that equal clocks have equal bytes:
//! `0x01` (format version), then the entry count as an unsigned LEB128 varint, then for each entry
//! in increasing node order the node as a varint (the first node itself, every later one as the gap
//! `node - previous - 1`) and the counter (at least 1) as a varint. Varints are minimal (no
//! redundant `0x80` groups) and nothing may follow the last entry.

use std::cmp::Ordering as CmpOrdering;
use std::fmt;

/// Node ids are the same 16-bit ids as in [`crate::timestamp::Timestamp`].
pub type NodeId = u16;

/// Version byte at the start of [`VectorClock::to_bytes`].
pub const FORMAT_VERSION: u8 = 1;

/// How two vector clocks relate in the happens-before partial order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Ordering {
    Before,
    After,
    Equal,
    Concurrent,
}

impl Ordering {
    /// The relation seen from the other side: `Before` ↔ `After`.
    pub const fn reverse(self) -> Self {
        match self {
            Self::Before => Self::After,
            Self::After => Self::Before,
            other => other,
        }
    }
}

/// Why a vector clock could not be built, changed or decoded. Each variant names the problem.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum VectorClockError {
    CounterOverflow { node: NodeId },
    DuplicateNode(NodeId),
    Malformed { offset: usize, reason: &'static str },
}

impl fmt::Display for VectorClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CounterOverflow { node } => write!(
                f,
                "the counter of node {node} would pass {} (2**64 - 1)",
                u64::MAX
            ),
            Self::DuplicateNode(node) => write!(f, "node {node} appears more than once"),
            Self::Malformed { offset, reason } => {
                write!(
                    f,
                    "malformed vector clock bytes at offset {offset}: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for VectorClockError {}

#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct VectorClock {
    /// Sorted by node, no duplicate nodes, no zero counters.
    entries: Vec<(NodeId, u64)>,
}

impl VectorClock {
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Builds from `(node, counter)` pairs in any order; zero counters are dropped, a node given
    /// twice is an error.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (NodeId, u64)>,
    ) -> Result<Self, VectorClockError> {
        let mut entries: Vec<(NodeId, u64)> = entries.into_iter().collect();
        entries.sort_unstable_by_key(|&(node, _)| node);
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(VectorClockError::DuplicateNode(pair[0].0));
        }
        entries.retain(|&(_, counter)| counter != 0);
        Ok(Self { entries })
    }

    /// The counter of `node` (0 when absent).
    pub fn get(&self, node: NodeId) -> u64 {
        self.entries
            .binary_search_by_key(&node, |&(n, _)| n)
            .map_or(0, |i| self.entries[i].1)
    }

    /// Counts one event on `node` and returns its new counter; the clock is unchanged on error.
    pub fn increment(&mut self, node: NodeId) -> Result<u64, VectorClockError> {
        match self.entries.binary_search_by_key(&node, |&(n, _)| n) {
            Ok(i) => {
                let counter = self.entries[i]
                    .1
                    .checked_add(1)
                    .ok_or(VectorClockError::CounterOverflow { node })?;
                self.entries[i].1 = counter;
                Ok(counter)
            }
            Err(i) => {
                self.entries.insert(i, (node, 1));
                Ok(1)
            }
        }
    }

    /// Pointwise maximum with `other`, in place.
    pub fn merge(&mut self, other: &Self) {
        // Common case (other's nodes are a subset of ours): update in place, no allocation.
        let mut i = 0;
        let mut subset = true;
        for &(node, counter) in &other.entries {
            while i < self.entries.len() && self.entries[i].0 < node {
                i += 1;
            }
            if i < self.entries.len() && self.entries[i].0 == node {
                if self.entries[i].1 < counter {
                    self.entries[i].1 = counter;
                }
            } else {
                subset = false;
            }
        }
        if subset {
            return;
        }
        let mut merged = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) => match x.0.cmp(&y.0) {
                    CmpOrdering::Less => {
                        merged.push(x);
                        a.next();
                    }
                    CmpOrdering::Greater => {
                        merged.push(y);
                        b.next();
                    }
                    CmpOrdering::Equal => {
                        merged.push((x.0, x.1.max(y.1)));
                        a.next();
                        b.next();
                    }
                },
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&y)) => {
                    merged.push(y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.entries = merged;
    }

    /// Where `self` stands relative to `other` in the happens-before order.
    pub fn compare(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.entries, &other.entries);
        let (mut i, mut j) = (0, 0);
        // `ahead`: self has an event other has not seen; `behind`: the reverse.
        let (mut ahead, mut behind) = (false, false);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            match x.0.cmp(&y.0) {
                CmpOrdering::Less => {
                    ahead = true;
                    i += 1;
                }
                CmpOrdering::Greater => {
                    behind = true;
                    j += 1;
                }
                CmpOrdering::Equal => {
                    match x.1.cmp(&y.1) {
                        CmpOrdering::Greater => ahead = true,
                        CmpOrdering::Less => behind = true,
                        CmpOrdering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
            if ahead && behind {
                return Ordering::Concurrent;
            }
        }
        // Stored counters are never zero, so any leftover entry is an unseen event.
        ahead |= i < a.len();
        behind |= j < b.len();
        match (ahead, behind) {
            (false, false) => Ordering::Equal,
            (true, false) => Ordering::After,
            (false, true) => Ordering::Before,
            (true, true) => Ordering::Concurrent,
        }
    }

    pub fn happens_before(&self, other: &Self) -> bool {
        self.compare(other) == Ordering::Before
    }

    pub fn concurrent_with(&self, other: &Self) -> bool {
        self.compare(other) == Ordering::Concurrent
    }

    /// True when `self` has seen every event of `other` (after or equal), like `>=`.
    pub fn dominates(&self, other: &Self) -> bool {
        matches!(self.compare(other), Ordering::After | Ordering::Equal)
    }

    /// Number of nodes with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(node, counter)` pairs in increasing node order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().copied()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.entries.len() * 6);
        out.push(FORMAT_VERSION);
        put_varint(&mut out, self.entries.len() as u64);
        let mut previous: Option<NodeId> = None;
        for &(node, counter) in &self.entries {
            let gap = previous.map_or(u64::from(node), |p| u64::from(node - p - 1));
            put_varint(&mut out, gap);
            put_varint(&mut out, counter);
            previous = Some(node);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VectorClockError> {
        let mut reader = Reader { bytes, offset: 0 };
        match bytes.first() {
            None => return Err(reader.fail("empty input (expected a format version byte)")),
            Some(&FORMAT_VERSION) => reader.offset = 1,
            Some(_) => return Err(reader.fail("unknown format version (expected 1)")),
        }
        let count = reader.varint()?;
        // Each entry takes at least two bytes: bound the allocation by the input size.
        if count > (bytes.len() - reader.offset) as u64 / 2 {
            return Err(reader.fail("entry count is larger than the remaining bytes can hold"));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut previous: Option<NodeId> = None;
        for _ in 0..count {
            let start = reader.offset;
            let gap = reader.varint()?;
            let node = previous
                .map_or(Some(gap), |p| {
                    u64::from(p).checked_add(1).and_then(|n| n.checked_add(gap))
                })
                .and_then(|n| NodeId::try_from(n).ok())
                .ok_or(VectorClockError::Malformed {
                    offset: start,
                    reason: "node id out of range 0..=65535",
                })?;
            let counter_offset = reader.offset;
            let counter = reader.varint()?;
            if counter == 0 {
                return Err(VectorClockError::Malformed {
                    offset: counter_offset,
                    reason: "zero counter (zero counters are never encoded)",
                });
            }
            entries.push((node, counter));
            previous = Some(node);
        }
        if reader.offset != bytes.len() {
            return Err(reader.fail("trailing bytes after the last entry"));
        }
        Ok(Self { entries })
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        match self.compare(other) {
            Ordering::Before => Some(CmpOrdering::Less),
            Ordering::After => Some(CmpOrdering::Greater),
            Ordering::Equal => Some(CmpOrdering::Equal),
            Ordering::Concurrent => None,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn fail(&self, reason: &'static str) -> VectorClockError {
        VectorClockError::Malformed {
            offset: self.offset,
            reason,
        }
    }

    fn varint(&mut self) -> Result<u64, VectorClockError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.offset) else {
                self.offset = start;
                return Err(self.fail("truncated varint"));
            };
            self.offset += 1;
            let low = u64::from(byte & 0x7f);
            if shift == 63 && low > 1 {
                self.offset = start;
                return Err(self.fail("varint does not fit in 64 bits"));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    self.offset = start;
                    return Err(self.fail("non-minimal varint"));
                }
                return Ok(value);
            }
        }
        self.offset = start;
        Err(self.fail("varint does not fit in 64 bits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(entries: &[(NodeId, u64)]) -> VectorClock {
        VectorClock::from_entries(entries.iter().copied()).expect("valid entries")
    }

    #[test]
    fn compare_table() {
        type Entries = &'static [(NodeId, u64)];
        let cases: &[(Entries, Entries, Ordering)] = &[
            (&[], &[], Ordering::Equal),
            (&[(1, 1)], &[], Ordering::After),
            (&[], &[(1, 1)], Ordering::Before),
            (&[(1, 1), (2, 2)], &[(1, 1), (2, 2)], Ordering::Equal),
            (&[(1, 1), (2, 2)], &[(1, 2), (2, 2)], Ordering::Before),
            (&[(1, 2)], &[(2, 1)], Ordering::Concurrent),
            (&[(1, 2), (2, 1)], &[(1, 1), (2, 2)], Ordering::Concurrent),
            (&[(1, 2), (3, 1)], &[(1, 2)], Ordering::After),
            (&[(1, 2)], &[(1, 2), (3, 1)], Ordering::Before),
            (&[(0, 5), (65535, 1)], &[(0, 5)], Ordering::After),
            (&[(1, 3), (2, 0)], &[(1, 3)], Ordering::Equal),
        ];
        for (a, b, expected) in cases {
            let (a, b) = (vc(a), vc(b));
            assert_eq!(a.compare(&b), *expected, "{a:?} vs {b:?}");
            assert_eq!(b.compare(&a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn partial_order_operators() {
        let (a, b) = (vc(&[(1, 2)]), vc(&[(2, 1)]));
        // The comparison operators are the partial order: all four are false when concurrent.
        assert_eq!(a.partial_cmp(&b), None);
        assert_eq!([a < b, a > b, a <= b, a >= b], [false; 4]);
        assert!(a.concurrent_with(&b) && b.concurrent_with(&a));
        let c = vc(&[(1, 2), (2, 1)]);
        assert!(a < c && a.happens_before(&c) && c.dominates(&a) && c.dominates(&c));
        assert!(!a.dominates(&c));
    }

    #[test]
    fn increment_and_get() {
        let mut clock = VectorClock::new();
        assert_eq!(clock.get(7), 0);
        assert_eq!(clock.increment(7), Ok(1));
        assert_eq!(clock.increment(3), Ok(1));
        assert_eq!(clock.increment(7), Ok(2));
        assert_eq!(clock.iter().collect::<Vec<_>>(), vec![(3, 1), (7, 2)]);
        let mut full = vc(&[(4, u64::MAX)]);
        assert_eq!(
            full.increment(4),
            Err(VectorClockError::CounterOverflow { node: 4 })
        );
        assert_eq!(full.get(4), u64::MAX);
    }

    #[test]
    fn merge_is_pointwise_max() {
        let mut a = vc(&[(1, 5), (3, 1)]);
        a.merge(&vc(&[(1, 2), (3, 4)]));
        assert_eq!(a, vc(&[(1, 5), (3, 4)]));
        a.merge(&vc(&[(0, 1), (2, 9), (9, 9)]));
        assert_eq!(a, vc(&[(0, 1), (1, 5), (2, 9), (3, 4), (9, 9)]));
        let before = a.clone();
        a.merge(&before);
        assert_eq!(a, before);
        a.merge(&VectorClock::new());
        assert_eq!(a, before);
    }

    #[test]
    fn duplicate_nodes_are_rejected() {
        assert_eq!(
            VectorClock::from_entries([(2, 1), (2, 3)]),
            Err(VectorClockError::DuplicateNode(2))
        );
    }

    #[test]
    fn bytes_round_trip_and_are_compact() {
        for clock in [
            VectorClock::new(),
            vc(&[(0, 1)]),
            vc(&[(1, 300), (2, 1), (65535, u64::MAX)]),
        ] {
            assert_eq!(
                VectorClock::from_bytes(&clock.to_bytes()),
                Ok(clock.clone())
            );
        }
        assert_eq!(
            vc(&[(1, 1), (2, 1), (3, 1)]).to_bytes(),
            vec![1, 3, 1, 1, 0, 1, 0, 1]
        );
    }

    #[test]
    fn malformed_bytes_are_rejected_with_offset() {
        let malformed: &[(&[u8], usize)] = &[
            (&[], 0),
            (&[2, 0], 0),
            (&[1], 1),
            (&[1, 1, 1], 2),                         // truncated counter
            (&[1, 1, 1, 0], 3),                      // zero counter
            (&[1, 0, 0], 2),                         // trailing byte
            (&[1, 5, 1, 1], 2),                      // count 5 > what 2 bytes hold
            (&[1, 1, 0x80, 0x80, 0x04, 1], 2),       // node 65536
            (&[1, 2, 0xff, 0xff, 0x03, 1, 0, 1], 6), // second node past 65535
            (&[1, 1, 0x81, 0x00, 1], 2),             // non-minimal varint
            (
                &[
                    1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
                3,
            ),
        ];
        for (bytes, offset) in malformed {
            match VectorClock::from_bytes(bytes) {
                Err(VectorClockError::Malformed { offset: at, .. }) => {
                    assert_eq!(at, *offset, "{bytes:?}");
                }
                other => panic!("{bytes:?} decoded as {other:?}"),
            }
        }
    }
}
