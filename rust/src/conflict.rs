//! Transaction conflict detection for optimistic commits (the decision half of group commit).
//!
//! A [`ConflictDetector`] remembers, for every key written by a recorded commit, the timestamp of
//! the last commit that wrote it, and decides whether a transaction may commit:
//! - **too old**: its `start_ts` is at or below the low watermark, so the history it must be checked
//!   against may have been forgotten; it is rejected as unverifiable (as Apache Omid does);
//! - **write-write** (both isolation levels): it writes a key whose last commit is after its
//!   `start_ts` (timestamp order `(physical, logical, node)`);
//! - **read-write** (serializable only): it reads such a key.
//!
//! Deciding never records: [`ConflictDetector::check`] and [`ConflictDetector::check_batch`] take
//! `&self`, and the caller calls [`ConflictDetector::record`] for each accepted transaction once its
//! commit is durable. A batch is decided in submission order, first committer wins: a transaction
//! that writes (or, under serializable, reads) a key written by an earlier accepted member of the
//! same batch loses to it, since that member will commit after this one's start.
//!
//! Memory bound: at most `max_keys` keys are remembered, in one flat table allocated at creation
//! (`table.rs`: buckets of slots holding a key hash and its last commit, after Apache Omid's
//! `CommitHashMap`). Recording a new key into a full table forgets the oldest commit among the
//! key's candidate slots and raises the low watermark to it, so forgetting never lets a conflict
//! through: any transaction that could have conflicted with a forgotten commit started at or below
//! the watermark and is rejected as too old. Which keys are forgotten is the table's choice (by
//! bucket, not strictly the least recently recorded key of all); that the watermark covers them is
//! the rule.
//!
//! Keys are hashed once, when a [`Transaction`] is built (foldhash, with a random seed per process
//! so that nobody outside can choose colliding keys); the detector stores only a tag of the hash.
//! Two distinct keys that share a slot (probability about 1e-13 per check, see `table.rs`) can
//! only cause a false conflict, never a missed one. Memory: 16 bytes per key (`max_keys` rounded up
//! to a multiple of 16), at most 32 from 8 keys up; see [`ConflictDetector::memory_bytes`].
//!
//! The table spans many cache lines (16 MB at the default size, on huge pages where the system
//! offers them), so nearly every key misses the cache; the misses are overlapped by prefetching
//! in two steps, each key's short-tag lines first (and for a record its candidates' oldest
//! commits), then the lines that the match (or the record) will read. `check_batch` does it
//! itself, a few keys ahead; a caller that records a batch calls
//! [`ConflictDetector::prefetch_writes_choice`] two decisions ahead and
//! [`ConflictDetector::prefetch_writes_rest`] one decision ahead.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::timestamp::Timestamp;
use crate::vclock::{Ordering, VectorClock};

/// Transaction ids are unsigned 64-bit integers, unique within one batch.
pub type TxnId = u64;

mod inline;
mod table;
pub(crate) mod zeroed;

use inline::InlineBuffer;
use table::KeyTable;

/// Default `max_keys`: one million remembered keys, a table of 16 MB.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

static KEY_HASHER: OnceLock<foldhash::fast::RandomState> = OnceLock::new();

/// The 64-bit hash the detector stores for `key` (stable within one process only).
pub fn key_hash(key: &[u8]) -> u64 {
    KEY_HASHER
        .get_or_init(foldhash::fast::RandomState::default)
        .hash_one(key)
}

pub(crate) fn id_hash(id: TxnId) -> u64 {
    KEY_HASHER
        .get_or_init(foldhash::fast::RandomState::default)
        .hash_one(id)
}

/// The keys are already well-mixed 64-bit hashes: the maps use them as they are.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<PassThroughHasher>>;
type HashSetU64 = HashSet<u64, BuildHasherDefault<PassThroughHasher>>;

fn hash_keyed<V>(capacity: usize) -> HashKeyed<V> {
    HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default())
}

fn hash_set(capacity: usize) -> HashSetU64 {
    HashSet::with_capacity_and_hasher(capacity, BuildHasherDefault::default())
}

/// A batch's map of 64-bit keys (key hashes, or ids) to ids: open addressing with linear
/// probing, at most half full, cheaper than a general hash map for the batch check's few
/// operations per key. A key's first slot comes from `spread`, a well-mixed hash of it (a key
/// hash is its own). The first insert of a key wins. Kept between batches (see [`BATCH_SCRATCH`]):
/// [`Self::reset`] empties only the slots the last batch could use (a prefix, at most four per
/// key it had room for).
#[derive(Default)]
pub(crate) struct FlatMap {
    /// A key of 0 marks an empty slot (the key 0 itself is kept in `zero`). The map is the first
    /// `mask + 1` slots; those after them are empty.
    keys: Vec<u64>,
    values: Vec<u64>,
    mask: usize,
    zero: Option<u64>,
}

impl FlatMap {
    /// Empties the map and makes room for `count` keys.
    pub(crate) fn reset(&mut self, count: usize) {
        let size = (count * 2).next_power_of_two().max(16);
        // A map far larger than this batch needs (after a huge one) is given back.
        if size > self.keys.len() || (self.keys.len() > 1 << 16 && self.keys.len() > size * 8) {
            self.keys = vec![0; size];
            self.values = vec![0; size];
        } else if !self.keys.is_empty() {
            // One `memset` of the last batch's slots, rather than a store per key it inserted.
            self.keys[..=self.mask].fill(0);
        }
        self.mask = size - 1;
        self.zero = None;
    }

    #[inline]
    pub(crate) fn get(&self, key: u64, spread: u64) -> Option<u64> {
        if key == 0 {
            return self.zero;
        }
        let mut at = spread as usize & self.mask;
        loop {
            match self.keys[at] {
                0 => return None,
                found if found == key => return Some(self.values[at]),
                _ => at = (at + 1) & self.mask,
            }
        }
    }

    /// Starts loading the first slot of a key whose `spread` is given (a map of a large batch
    /// misses the cache while the table's lines stream through it).
    #[inline]
    pub(crate) fn prefetch(&self, spread: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.keys.get(spread as usize & self.mask) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: SSE is part of every x86_64 target, and a prefetch only hints the cache:
            // it never faults (the address is a slot of the map anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = spread;
    }

    /// Inserts `value` for `key` unless the key is there; returns whether it was absent.
    #[inline]
    pub(crate) fn insert(&mut self, key: u64, spread: u64, value: u64) -> bool {
        if key == 0 {
            let absent = self.zero.is_none();
            self.zero.get_or_insert(value);
            return absent;
        }
        let mut at = spread as usize & self.mask;
        loop {
            match self.keys[at] {
                0 => {
                    self.keys[at] = key;
                    self.values[at] = value;
                    return true;
                }
                found if found == key => return false,
                _ => at = (at + 1) & self.mask,
            }
        }
    }
}

/// What a batch check works in: the map of the batch's ids, the map of its accepted members'
/// writes, and the bits of its checked keys the table is known not to hold.
#[derive(Default)]
struct BatchScratch {
    ids: FlatMap,
    writes: FlatMap,
    absent: AbsentKeys,
}

/// One bit per checked key of a batch, by the key's place in the batch's order of checked keys
/// (each transaction's writes, then under serializable its reads): set when the second prefetch
/// step found no candidate slot with the key's short tag, so the table does not hold the key and
/// its lookup is skipped (no placing and scanning it again). The table does not change during a
/// check (`&self`), and the bits are cleared for each batch; a clear bit only means "look up".
#[derive(Default)]
struct AbsentKeys {
    words: Vec<u64>,
}

impl AbsentKeys {
    /// Clears the bits, with room for `keys` keys (none when the second step does not run).
    fn reset(&mut self, keys: usize) {
        self.words.clear();
        self.words.resize(keys.div_ceil(64), 0);
    }

    #[inline(always)]
    fn set(&mut self, key: usize) {
        if let Some(word) = self.words.get_mut(key / 64) {
            *word |= 1 << (key % 64);
        }
    }

    #[inline(always)]
    fn contains(&self, key: usize) -> bool {
        self.words
            .get(key / 64)
            .is_some_and(|word| word >> (key % 64) & 1 != 0)
    }
}

thread_local! {
    /// The batch check's maps and bits (see [`BatchScratch`]), kept between the batches of this
    /// thread: no allocation and no clearing of a whole map per batch.
    static BATCH_SCRATCH: RefCell<BatchScratch> = RefCell::default();
}

/// Runs `work` with this thread's batch scratch (see [`BATCH_SCRATCH`]): taken out for the call
/// and put back after it, so a nested call (or one while the thread exits) gets an empty one.
fn with_batch_scratch<R>(work: impl FnOnce(&mut BatchScratch) -> R) -> R {
    let mut scratch = BATCH_SCRATCH
        .try_with(|scratch| std::mem::take(&mut *scratch.borrow_mut()))
        .unwrap_or_default();
    let result = work(&mut scratch);
    let _ = BATCH_SCRATCH.try_with(|kept| *kept.borrow_mut() = scratch);
    result
}

/// A transaction's read or write set: the keys in one buffer, in the given order, with their
/// hashes computed once. Each key is stored after its length (8 bytes, little-endian): the
/// layout the commit engine's content fingerprint hashes, so that it takes the buffer as it is
/// ([`Self::framed`]) instead of copying the keys one by one; the lengths are also how the keys
/// are found again (no table of offsets).
///
/// A small set (up to [`INLINE_KEYS`] keys, [`INLINE_KEY_BYTES`] bytes framed) is kept inside the
/// set itself, so inside its [`Transaction`]: the transactions of a decoded message sit side by
/// side in one vector, and what the writer thread walks per transaction (ids, starts, hashes, the
/// framed keys) is one contiguous run rather than several heap buffers each. Larger sets move to
/// the heap (see `inline.rs`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeySet {
    data: InlineBuffer<u8, INLINE_KEY_BYTES>,
    hashes: InlineBuffer<u64, INLINE_KEYS>,
    /// The length of the longest key (0 when empty).
    longest: usize,
}

/// Keys a [`KeySet`] holds inline: a transaction of 8 keys has 4 reads and 4 writes.
pub const INLINE_KEYS: usize = 4;
/// Framed bytes a [`KeySet`] holds inline: 4 keys of up to 16 bytes.
pub const INLINE_KEY_BYTES: usize = INLINE_KEYS * (KEY_LENGTH_BYTES + 16);

/// Bytes of the length before each key in [`KeySet`]'s buffer.
const KEY_LENGTH_BYTES: usize = 8;

impl KeySet {
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut set = Self::default();
        for key in keys {
            set.push(key.as_ref());
        }
        set
    }

    /// Appends `key` (inlined: the decoder of a message pushes every key of it).
    #[inline(always)]
    pub fn push(&mut self, key: &[u8]) {
        let length = (key.len() as u64).to_le_bytes();
        self.data.extend_from_pair(&length, key);
        self.hashes.push(key_hash(key));
        self.longest = self.longest.max(key.len());
    }

    /// Empties the set, keeping its buffers for the next keys.
    pub fn clear(&mut self) {
        self.data.clear();
        self.hashes.clear();
        self.longest = 0;
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`-th key, or `None` past the end (found by walking the keys before it: for a
    /// conflict's report, not a hot path).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.iter().nth(index)
    }

    pub fn iter(&self) -> FramedKeys<'_> {
        FramedKeys {
            rest: self.data.as_slice(),
            left: self.len(),
        }
    }

    /// The length of the longest key, 0 for an empty set (a limit on key size is checked once
    /// per set).
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Every key after its length (8 bytes, little-endian), in key order: the bytes the content
    /// fingerprint hashes for the set (`commit::fingerprint`).
    pub fn framed(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// The hash of each key, in key order (see [`key_hash`]).
    #[inline(always)]
    pub fn hashes(&self) -> &[u64] {
        self.hashes.as_slice()
    }
}

/// The keys of a [`KeySet`], in order, read from its framed buffer.
pub struct FramedKeys<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for FramedKeys<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (length, after) = self.rest.split_first_chunk::<KEY_LENGTH_BYTES>()?;
        let length = usize::try_from(u64::from_le_bytes(*length)).ok()?;
        let key = after.get(..length)?;
        self.rest = &after[length..];
        self.left = self.left.saturating_sub(1);
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for FramedKeys<'_> {}

/// What a transaction read and wrote, as seen at commit time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transaction {
    pub id: TxnId,
    pub start_ts: Timestamp,
    pub reads: KeySet,
    pub writes: KeySet,
    /// The causal history of a replicated write, for [`concurrent_writes`].
    pub clock: Option<VectorClock>,
}

impl Transaction {
    pub fn new<R: AsRef<[u8]>, W: AsRef<[u8]>>(
        id: TxnId,
        start_ts: Timestamp,
        read_set: impl IntoIterator<Item = R>,
        write_set: impl IntoIterator<Item = W>,
        clock: Option<VectorClock>,
    ) -> Self {
        Self {
            id,
            start_ts,
            reads: KeySet::new(read_set),
            writes: KeySet::new(write_set),
            clock,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Isolation {
    /// Write-write conflicts only.
    Snapshot,
    /// Write-write and read-write conflicts (reads of keys committed after the start).
    Serializable,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConflictKind {
    WriteWrite,
    ReadWrite,
    TooOld,
}

impl ConflictKind {
    /// Every kind, in the order of the Python enum's members.
    pub const ALL: [ConflictKind; 3] = [
        ConflictKind::WriteWrite,
        ConflictKind::ReadWrite,
        ConflictKind::TooOld,
    ];

    /// The kind's name: on the wire (`Conflict.kind`) and as the Python enum's value.
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::WriteWrite => "write_write",
            ConflictKind::ReadWrite => "read_write",
            ConflictKind::TooOld => "too_old",
        }
    }

    /// The kind named `name` (see [`Self::name`]), or None.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().as_bytes() == name)
    }

    /// Its place in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a rejected transaction lost to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LostTo {
    /// A recorded commit of the conflicting key, after the transaction's start.
    Commit(Timestamp),
    /// An earlier accepted transaction of the same batch that writes the conflicting key.
    BatchMember(TxnId),
    /// The low watermark the transaction started at or below.
    LowWatermark(Timestamp),
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Conflict {
    pub txn_id: TxnId,
    pub kind: ConflictKind,
    /// The conflicting key of the rejected transaction (`None` when too old).
    pub key: Option<Vec<u8>>,
    pub lost_to: LostTo,
}

/// A batch's outcome, one entry per transaction in submission order: `None` when accepted. A
/// conflict is boxed: an entry is 8 bytes, not a `Conflict`'s 64 (a cache line per transaction
/// the check would write and its caller read again, nearly always for `None`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BatchDecision {
    pub outcomes: Vec<Option<Box<Conflict>>>,
}

impl BatchDecision {
    /// Indices of the accepted transactions, in submission order.
    pub fn accepted(&self) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, outcome)| outcome.is_none().then_some(i))
    }

    /// Indices and conflicts of the rejected transactions, in submission order.
    pub fn rejected(&self) -> impl Iterator<Item = (usize, &Conflict)> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, outcome)| outcome.as_deref().map(|c| (i, c)))
    }
}

/// Two transactions that write a common key with concurrent vector clocks.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConcurrentWrite {
    /// Index of the earlier transaction in the batch.
    pub first: usize,
    /// Index of the later one.
    pub second: usize,
    /// The keys both write, in the first one's write-set order, each once.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConflictError {
    ZeroMaxKeys,
    /// The table for `max_keys` keys cannot be allocated.
    TooManyKeys(usize),
    DuplicateTxnId(TxnId),
    CommitNotAfterStart {
        txn_id: TxnId,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    },
}

impl fmt::Display for ConflictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroMaxKeys => write!(f, "max_keys must be at least 1, got 0"),
            Self::TooManyKeys(max_keys) => write!(
                f,
                "max_keys {max_keys} is too large: its table of about {} bytes cannot be allocated",
                max_keys.saturating_mul(16)
            ),
            Self::DuplicateTxnId(id) => {
                write!(f, "duplicate transaction id {id} in one batch")
            }
            Self::CommitNotAfterStart {
                txn_id,
                start_ts,
                commit_ts,
            } => write!(
                f,
                "commit_ts {commit_ts} of transaction {txn_id} must be after its start_ts {start_ts}"
            ),
        }
    }
}

impl std::error::Error for ConflictError {}

fn check_unique_ids<T: Borrow<Transaction>>(
    txns: &[T],
    seen: &mut FlatMap,
) -> Result<(), ConflictError> {
    seen.reset(txns.len());
    for txn in txns {
        let id = txn.borrow().id;
        // Ids are chosen by clients: mix them (seeded) before they place a key of the flat map.
        if !seen.insert(id, id_hash(id), id) {
            return Err(ConflictError::DuplicateTxnId(id));
        }
    }
    Ok(())
}

pub struct ConflictDetector {
    isolation: Isolation,
    max_keys: usize,
    /// Key hash → timestamp of the last recorded commit that wrote the key.
    table: KeyTable,
    low_watermark: Option<Timestamp>,
}

/// Checked keys a batch call prefetches ahead of the transaction it checks, in two steps: the
/// short-tag lines of both candidate buckets twice this far ahead, then (those lines loaded) the
/// lines of the matching slot this far ahead. A transaction of 8 keys (about 50 ns a key) gives
/// each step's loads about 400 ns, more than a miss to memory takes.
const PREFETCH_AHEAD_KEYS: usize = 8;

/// A cursor running ahead of a batch's check: the next transaction it visits and the checked
/// keys of those it visited.
#[derive(Default)]
struct Ahead {
    next: usize,
    keys: usize,
}

impl Ahead {
    /// Visits transactions until `keys` checked keys are visited (or the batch ends); `visit` is
    /// given each one and the place of its first checked key in the batch's order.
    fn visit_until<T: Borrow<Transaction>>(
        &mut self,
        txns: &[T],
        keys: usize,
        detector: &ConflictDetector,
        mut visit: impl FnMut(&Transaction, usize),
    ) {
        while self.keys < keys {
            let Some(txn) = txns.get(self.next) else {
                break;
            };
            let txn = txn.borrow();
            visit(txn, self.keys);
            self.keys += detector.checked_keys(txn);
            self.next += 1;
        }
    }
}

/// Where a batch check's lookups find the batch's state: its accepted members' writes so far, the
/// bits of its keys the table does not hold, and the place of the checked transaction's first key
/// among them.
struct BatchView<'a> {
    writes: &'a FlatMap,
    absent: &'a AbsentKeys,
    first_key: usize,
}

impl ConflictDetector {
    /// A detector remembering up to `max_keys` keys; its table is allocated now.
    pub fn new(isolation: Isolation, max_keys: usize) -> Result<Self, ConflictError> {
        if max_keys == 0 {
            return Err(ConflictError::ZeroMaxKeys);
        }
        let table = KeyTable::new(max_keys).map_err(|_| ConflictError::TooManyKeys(max_keys))?;
        Ok(Self {
            isolation,
            max_keys,
            table,
            low_watermark: None,
        })
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Number of keys remembered now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Faults the key table in now (see `zeroed.rs`): its first batches then touch no fresh page.
    pub fn prefault(&mut self) {
        self.table.prefault();
    }

    /// The newest forgotten commit (or the highest raised one): transactions that started at or
    /// below it are rejected as too old. `None` until something is forgotten.
    pub fn low_watermark(&self) -> Option<Timestamp> {
        self.low_watermark
    }

    /// Raises the low watermark to at least `ts` (it never goes down). After a restart whose
    /// replayed history starts at some commit, raise it to just below that commit.
    pub fn raise_low_watermark(&mut self, ts: Timestamp) {
        self.low_watermark = Some(self.low_watermark.map_or(ts, |lw| lw.max(ts)));
    }

    /// The last recorded commit of `key`, if still remembered.
    pub fn last_commit(&self, key: &[u8]) -> Option<Timestamp> {
        self.table.get(key_hash(key))
    }

    /// Bytes held by the history (its table, allocated once at creation).
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
    }

    /// The number of `txn`'s keys a check looks up: writes, and reads under serializable.
    fn checked_keys(&self, txn: &Transaction) -> usize {
        match self.isolation {
            Isolation::Snapshot => txn.writes.len(),
            Isolation::Serializable => txn.writes.len() + txn.reads.len(),
        }
    }

    /// Calls `each` with the hash of each of `txn`'s checked keys.
    #[inline]
    fn for_checked_keys(&self, txn: &Transaction, mut each: impl FnMut(u64)) {
        txn.writes.hashes().iter().for_each(|&hash| each(hash));
        if self.isolation == Isolation::Serializable {
            txn.reads.hashes().iter().for_each(|&hash| each(hash));
        }
    }

    /// Starts loading the table's buckets of `txn`'s checked keys (writes, and reads under
    /// serializable), so that a later check or record finds them in the cache.
    pub fn prefetch(&self, txn: &Transaction) {
        self.for_checked_keys(txn, |hash| self.table.prefetch(hash));
    }

    /// The first step of a record's prefetch in two steps: for each of `txn`'s writes, the lines
    /// of its two candidate buckets that choose which one the record changes (short tags, oldest
    /// commits). Then, a few keys later, [`Self::prefetch_writes_rest`].
    pub fn prefetch_writes_choice(&self, txn: &Transaction) {
        for &hash in txn.writes.hashes() {
            self.table.prefetch_record_choice(hash);
        }
    }

    /// The second step: with those lines loaded, the rest of the one bucket each write will
    /// change.
    /// Nothing for a table small enough to stay in the cache (the step's scans would cost more
    /// than they save).
    pub fn prefetch_writes_rest(&self, txn: &Transaction) {
        if !self.table.is_large() {
            return;
        }
        for &hash in txn.writes.hashes() {
            self.table.prefetch_record(hash);
        }
    }

    /// The first reason `txn` cannot commit after the recorded history, or `None`.
    pub fn check(&self, txn: &Transaction) -> Option<Conflict> {
        self.first_conflict(txn, None)
    }

    /// Decides a batch in submission order, first committer wins, against the recorded history
    /// and the earlier accepted members; records nothing. Transaction ids must be unique.
    pub fn check_batch<T: Borrow<Transaction>>(
        &self,
        txns: &[T],
    ) -> Result<BatchDecision, ConflictError> {
        with_batch_scratch(|scratch| {
            check_unique_ids(txns, &mut scratch.ids)?;
            Ok(self.check_batch_in(txns, scratch))
        })
    }

    /// [`Self::check_batch`] for a caller whose ids are unique by construction (the commit
    /// engine keeps one request per id): the batch's ids are not checked a second time.
    pub fn check_batch_of_unique_ids<T: Borrow<Transaction>>(&self, txns: &[T]) -> BatchDecision {
        with_batch_scratch(|scratch| self.check_batch_in(txns, scratch))
    }

    /// [`Self::check_batch`] once the ids are known unique, in `scratch`'s map of the accepted
    /// members' writes and bits of absent keys. A key that the second prefetch step (a large
    /// table's) finds in no candidate is not looked up again: most checked keys are new ones.
    fn check_batch_in<T: Borrow<Transaction>>(
        &self,
        txns: &[T],
        scratch: &mut BatchScratch,
    ) -> BatchDecision {
        let BatchScratch {
            writes: batch_writes,
            absent,
            ..
        } = scratch;
        let large = self.table.is_large();
        let (write_count, checked_count) = txns.iter().fold((0, 0), |(writes, checked), txn| {
            let txn = txn.borrow();
            (writes + txn.writes.len(), checked + self.checked_keys(txn))
        });
        batch_writes.reset(write_count);
        absent.reset(if large { checked_count } else { 0 });
        let mut outcomes = Vec::with_capacity(txns.len());
        let (mut tags, mut slots, mut checked) = (Ahead::default(), Ahead::default(), 0);
        for txn in txns {
            let txn = txn.borrow();
            let first_key = checked;
            checked += self.checked_keys(txn);
            tags.visit_until(txns, checked + 2 * PREFETCH_AHEAD_KEYS, self, |next, _| {
                self.prefetch(next);
                // The batch's map of accepted writes, too: with thousands of transactions it
                // is larger than a core's first caches, and the table's lines evict it.
                self.for_checked_keys(next, |hash| batch_writes.prefetch(hash));
            });
            if large {
                slots.visit_until(
                    txns,
                    checked + PREFETCH_AHEAD_KEYS,
                    self,
                    |next, mut key| {
                        self.for_checked_keys(next, |hash| {
                            if !self.table.prefetch_slot(hash) {
                                absent.set(key);
                            }
                            key += 1;
                        });
                    },
                );
            }
            let view = BatchView {
                writes: batch_writes,
                absent,
                first_key,
            };
            let outcome = self.first_conflict(txn, Some(&view));
            if outcome.is_none() {
                for &hash in txn.writes.hashes() {
                    batch_writes.insert(hash, hash, txn.id);
                }
            }
            outcomes.push(outcome.map(Box::new));
        }
        BatchDecision { outcomes }
    }

    fn first_conflict(&self, txn: &Transaction, batch: Option<&BatchView<'_>>) -> Option<Conflict> {
        if let Some(lw) = self.low_watermark {
            if txn.start_ts <= lw {
                return Some(Conflict {
                    txn_id: txn.id,
                    kind: ConflictKind::TooOld,
                    key: None,
                    lost_to: LostTo::LowWatermark(lw),
                });
            }
        }
        let sets = [
            (ConflictKind::WriteWrite, &txn.writes),
            (ConflictKind::ReadWrite, &txn.reads),
        ];
        let checked = match self.isolation {
            Isolation::Snapshot => 1,
            Isolation::Serializable => 2,
        };
        // The place of the next key in the batch's order of checked keys (see `AbsentKeys`).
        let mut key = batch.map_or(0, |view| view.first_key);
        for &(kind, keys) in &sets[..checked] {
            for (index, &hash) in keys.hashes().iter().enumerate() {
                let commit = match batch {
                    Some(view) if view.absent.contains(key) => None,
                    _ => self.table.get(hash),
                };
                key += 1;
                let lost_to = match commit {
                    Some(commit) if commit > txn.start_ts => Some(LostTo::Commit(commit)),
                    _ => batch
                        .and_then(|view| view.writes.get(hash, hash))
                        .map(LostTo::BatchMember),
                };
                if let Some(lost_to) = lost_to {
                    return Some(Conflict {
                        txn_id: txn.id,
                        kind,
                        key: keys.get(index).map(<[u8]>::to_vec),
                        lost_to,
                    });
                }
            }
        }
        None
    }

    /// Remembers `txn`'s writes as committed at `commit_ts` (after its commit is durable). A key's
    /// last commit only moves forward: recording an older commit of a key changes nothing.
    pub fn record(&mut self, txn: &Transaction, commit_ts: Timestamp) -> Result<(), ConflictError> {
        if commit_ts <= txn.start_ts {
            return Err(ConflictError::CommitNotAfterStart {
                txn_id: txn.id,
                start_ts: txn.start_ts,
                commit_ts,
            });
        }
        for &hash in txn.writes.hashes() {
            if let Some(evicted) = self.table.record(hash, commit_ts) {
                self.raise_low_watermark(evicted);
            }
        }
        Ok(())
    }

    /// Splits a batch into groups of mutually independent transactions (indices, in submission
    /// order within each group): no two members of a group write a common key, and under
    /// serializable none reads a key another writes. Each transaction joins the first group it is
    /// independent of (first fit), or starts a new one.
    pub fn partition<T: Borrow<Transaction>>(
        &self,
        txns: &[T],
    ) -> Result<Vec<Vec<usize>>, ConflictError> {
        check_unique_ids(txns, &mut FlatMap::default())?;
        struct Group {
            writes: HashSetU64,
            reads: HashSetU64,
            members: Vec<usize>,
        }
        let serializable = self.isolation == Isolation::Serializable;
        let mut groups: Vec<Group> = Vec::new();
        for (index, txn) in txns.iter().enumerate() {
            let txn = txn.borrow();
            let (writes, reads) = (txn.writes.hashes(), txn.reads.hashes());
            let fits = |group: &Group| {
                !writes.iter().any(|h| group.writes.contains(h))
                    && !(serializable
                        && (reads.iter().any(|h| group.writes.contains(h))
                            || writes.iter().any(|h| group.reads.contains(h))))
            };
            let group = match groups.iter().position(fits) {
                Some(position) => &mut groups[position],
                None => {
                    groups.push(Group {
                        writes: hash_set(writes.len()),
                        reads: hash_set(if serializable { reads.len() } else { 0 }),
                        members: Vec::new(),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.writes.extend(writes.iter().copied());
            if serializable {
                group.reads.extend(reads.iter().copied());
            }
            group.members.push(index);
        }
        Ok(groups.into_iter().map(|group| group.members).collect())
    }
}

/// Pairs of transactions that write a common key with concurrent vector clocks (replicated writes
/// that neither saw the other: a conflict to resolve). Transactions without a clock are skipped.
/// Pairs are in submission order (by first, then second index). Transaction ids must be unique.
pub fn concurrent_writes<T: Borrow<Transaction>>(
    txns: &[T],
) -> Result<Vec<ConcurrentWrite>, ConflictError> {
    check_unique_ids(txns, &mut FlatMap::default())?;
    let mut writers: HashKeyed<Vec<usize>> = hash_keyed(0);
    for (index, txn) in txns.iter().enumerate() {
        let txn = txn.borrow();
        if txn.clock.is_none() {
            continue;
        }
        for &hash in txn.writes.hashes() {
            let list = writers.entry(hash).or_default();
            if list.last() != Some(&index) {
                list.push(index);
            }
        }
    }
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for list in writers.values() {
        for (n, &first) in list.iter().enumerate() {
            candidates.extend(list[n + 1..].iter().map(|&second| (first, second)));
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut found = Vec::new();
    for (first, second) in candidates {
        let (a, b) = (txns[first].borrow(), txns[second].borrow());
        let concurrent = match (&a.clock, &b.clock) {
            (Some(x), Some(y)) => x.compare(y) == Ordering::Concurrent,
            _ => false,
        };
        if !concurrent {
            continue;
        }
        let theirs: HashSet<&[u8]> = b.writes.iter().collect();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for key in a.writes.iter() {
            if theirs.contains(key) && !keys.iter().any(|k| k.as_slice() == key) {
                keys.push(key.to_vec());
            }
        }
        // Empty only when the pair shared a hash but no key (a hash collision).
        if !keys.is_empty() {
            found.push(ConcurrentWrite {
                first,
                second,
                keys,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(packed: u64) -> Timestamp {
        Timestamp::from_packed(packed, 0)
    }

    fn txn(id: TxnId, start: u64, reads: &[&str], writes: &[&str]) -> Transaction {
        Transaction::new(
            id,
            ts(start),
            reads.iter().map(|k| k.as_bytes()),
            writes.iter().map(|k| k.as_bytes()),
            None,
        )
    }

    fn detector(isolation: Isolation, max_keys: usize) -> ConflictDetector {
        ConflictDetector::new(isolation, max_keys).expect("max_keys > 0")
    }

    #[test]
    fn key_set_keeps_order_and_bytes() {
        let keys = KeySet::new([&b"a"[..], b"", b"bcd"]);
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            vec![&b"a"[..], b"", b"bcd"]
        );
        assert_eq!(keys.get(3), None);
        assert_eq!(keys.hashes()[2], key_hash(b"bcd"));
    }

    /// (isolation, recorded (writes, commit), candidate (start, reads, writes), expected outcome)
    #[test]
    fn check_table() {
        type Case = (
            Isolation,
            &'static [(&'static str, u64)],
            (u64, &'static [&'static str], &'static [&'static str]),
            Option<(ConflictKind, Option<&'static str>, LostTo)>,
        );
        use ConflictKind::*;
        use Isolation::*;
        let cases: &[Case] = &[
            (Snapshot, &[], (5, &["a"], &["a"]), None),
            (
                Snapshot,
                &[("a", 10)],
                (5, &[], &["a"]),
                Some((WriteWrite, Some("a"), LostTo::Commit(ts(10)))),
            ),
            (Snapshot, &[("a", 10)], (10, &[], &["a"]), None),
            (Snapshot, &[("a", 10)], (11, &[], &["a"]), None),
            (Snapshot, &[("a", 10)], (5, &["a"], &["b"]), None),
            (
                Serializable,
                &[("a", 10)],
                (5, &["a"], &["b"]),
                Some((ReadWrite, Some("a"), LostTo::Commit(ts(10)))),
            ),
            (
                Serializable,
                &[("a", 10), ("b", 12)],
                (5, &["a"], &["b"]),
                Some((WriteWrite, Some("b"), LostTo::Commit(ts(12)))),
            ),
            (Serializable, &[("a", 10)], (10, &["a"], &[]), None),
        ];
        for (isolation, history, (start, reads, writes), expected) in cases {
            let mut detector = detector(*isolation, 100);
            for (n, (key, commit)) in history.iter().enumerate() {
                let writer = txn(1000 + n as u64, commit - 1, &[], &[key]);
                detector
                    .record(&writer, ts(*commit))
                    .expect("commit after start");
            }
            let got = detector.check(&txn(1, *start, reads, writes));
            let expected = expected.map(|(kind, key, lost_to)| Conflict {
                txn_id: 1,
                kind,
                key: key.map(|k| k.as_bytes().to_vec()),
                lost_to,
            });
            assert_eq!(got, expected, "{isolation:?} {history:?} start={start}");
        }
    }

    #[test]
    fn node_breaks_ties_between_equal_physical_and_logical() {
        let mut detector = detector(Isolation::Snapshot, 10);
        let writer = Transaction::new(1, Timestamp::from_packed(9, 0), [b"k"], [b"k"], None);
        detector
            .record(&writer, Timestamp::from_packed(10, 2))
            .expect("after start");
        let at = |node| Transaction::new(2, Timestamp::from_packed(10, node), [b"k"], [b"k"], None);
        assert!(detector.check(&at(1)).is_some());
        assert!(detector.check(&at(2)).is_none());
    }

    #[test]
    fn batch_first_committer_wins_and_records_nothing() {
        let mut detector = detector(Isolation::Serializable, 100);
        detector
            .record(&txn(100, 1, &[], &["h"]), ts(20))
            .expect("after start");
        let batch = [
            txn(1, 30, &["x"], &["a"]),
            txn(2, 30, &[], &["a"]),    // loses to 1 (write-write in batch)
            txn(3, 30, &["a"], &["b"]), // loses to 1 (read-write in batch)
            txn(4, 10, &[], &["h"]),    // loses to the recorded commit 20
            txn(5, 30, &["b"], &["c"]), // 3 was rejected, so its write of b does not count
            txn(6, 30, &[], &["x"]),    // writes what 1 reads: allowed (1 is serialized first)
        ];
        let decision = detector.check_batch(&batch).expect("unique ids");
        assert_eq!(decision.accepted().collect::<Vec<_>>(), vec![0, 4, 5]);
        let lost: Vec<_> = decision
            .rejected()
            .map(|(i, c)| (i, c.kind, c.lost_to))
            .collect();
        assert_eq!(
            lost,
            vec![
                (1, ConflictKind::WriteWrite, LostTo::BatchMember(1)),
                (2, ConflictKind::ReadWrite, LostTo::BatchMember(1)),
                (3, ConflictKind::WriteWrite, LostTo::Commit(ts(20))),
            ]
        );
        assert_eq!(detector.len(), 1);
        assert!(detector.check(&batch[1]).is_none());
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let detector = detector(Isolation::Snapshot, 10);
        let batch = [txn(7, 1, &[], &["a"]), txn(7, 1, &[], &["b"])];
        assert_eq!(
            detector.check_batch(&batch),
            Err(ConflictError::DuplicateTxnId(7))
        );
        assert_eq!(
            detector.partition(&batch),
            Err(ConflictError::DuplicateTxnId(7))
        );
        assert_eq!(
            concurrent_writes(&batch),
            Err(ConflictError::DuplicateTxnId(7))
        );
    }

    #[test]
    fn record_rejects_commit_not_after_start() {
        let mut detector = detector(Isolation::Snapshot, 10);
        let t = txn(1, 5, &[], &["a"]);
        assert!(matches!(
            detector.record(&t, ts(5)),
            Err(ConflictError::CommitNotAfterStart { txn_id: 1, .. })
        ));
        assert!(detector.is_empty());
        assert!(matches!(
            ConflictDetector::new(Isolation::Snapshot, 0),
            Err(ConflictError::ZeroMaxKeys)
        ));
    }

    #[test]
    fn eviction_forgets_oldest_and_raises_low_watermark() {
        let mut detector = detector(Isolation::Snapshot, 2);
        detector.record(&txn(1, 0, &[], &["a"]), ts(10)).unwrap();
        detector.record(&txn(2, 0, &[], &["b"]), ts(11)).unwrap();
        // Rewriting "a" makes "b" the least recently recorded key.
        detector.record(&txn(3, 0, &[], &["a"]), ts(12)).unwrap();
        assert_eq!(detector.low_watermark(), None);
        detector.record(&txn(4, 0, &[], &["c"]), ts(13)).unwrap();
        assert_eq!(detector.len(), 2);
        assert_eq!(detector.low_watermark(), Some(ts(11)));
        assert_eq!(detector.last_commit(b"b"), None);
        assert_eq!(detector.last_commit(b"a"), Some(ts(12)));
        let old = detector.check(&txn(5, 11, &[], &["zzz"]));
        assert_eq!(old.map(|c| c.kind), Some(ConflictKind::TooOld));
        assert!(detector.check(&txn(6, 12, &[], &["b"])).is_none());
    }

    #[test]
    fn rewriting_remembered_keys_forgets_nothing() {
        let mut detector = detector(Isolation::Snapshot, 4);
        for commit in 1..10_000u64 {
            let key = format!("k{}", commit % 3);
            detector
                .record(&txn(commit, commit - 1, &[], &[&key]), ts(commit))
                .unwrap();
        }
        assert_eq!(detector.len(), 3);
        assert_eq!(detector.low_watermark(), None);
        assert_eq!(detector.last_commit(b"k0"), Some(ts(9_999)));
    }

    #[test]
    fn a_forgotten_key_is_never_a_missed_conflict() {
        // Many more keys than the table holds: every check of a key written after a start is a
        // conflict, or the start is at or below the low watermark (too old).
        let mut detector = detector(Isolation::Snapshot, 64);
        for commit in 1..5_000u64 {
            let key = format!("k{}", commit * 7 % 1_000);
            detector
                .record(&txn(commit, commit - 1, &[], &[&key]), ts(commit))
                .unwrap();
            if commit % 50 == 0 {
                let start = commit - 10;
                for back in 0..10 {
                    let written = format!("k{}", (commit - back) * 7 % 1_000);
                    let found = detector.check(&txn(900_000 + commit, start, &[], &[&written]));
                    assert!(found.is_some(), "commit {commit}: {written} after {start}");
                }
            }
        }
        assert!(detector.len() <= 64);
        assert!(detector.memory_bytes() <= 32 * 64);
    }

    #[test]
    fn the_table_takes_16_bytes_a_key_at_the_default_size() {
        let detector = detector(Isolation::Snapshot, DEFAULT_MAX_KEYS);
        assert_eq!(detector.memory_bytes(), 16 * DEFAULT_MAX_KEYS);
        assert!(matches!(
            ConflictDetector::new(Isolation::Snapshot, usize::MAX),
            Err(ConflictError::TooManyKeys(usize::MAX))
        ));
    }

    #[test]
    fn prefetching_changes_nothing() {
        for max_keys in [2, 100, 100_000] {
            let mut detector = detector(Isolation::Serializable, max_keys);
            let first = txn(1, 0, &["r"], &["a", "b"]);
            detector.record(&first, ts(10)).unwrap();
            let second = txn(2, 5, &["a"], &["c"]);
            for txn in [&first, &second] {
                detector.prefetch(txn);
                detector.prefetch_writes_choice(txn);
                detector.prefetch_writes_rest(txn);
            }
            assert_eq!(
                detector.check(&second).map(|c| c.kind),
                Some(ConflictKind::ReadWrite)
            );
            assert_eq!(detector.last_commit(b"b"), Some(ts(10)), "{max_keys}");
        }
    }

    /// A batch check (keys its second prefetch step found absent not looked up again; members
    /// of many keys) decides as lookups of each key one by one do, for a table that stays in
    /// the cache and one large enough for the second prefetch step.
    #[test]
    fn batch_check_agrees_with_key_by_key_lookups() {
        for max_keys in [1_000, 200_000] {
            let mut detector = detector(Isolation::Serializable, max_keys);
            let key = |n: u64| format!("k{n}");
            let mut commit = 1_000u64;
            for n in 0..max_keys as u64 / 2 {
                commit += 1;
                detector
                    .record(&txn(n, 0, &[], &[&key(n * 2)]), ts(commit))
                    .unwrap();
            }
            // Starts below and above the history's newest commits; a few members of many keys.
            let mut random = 0x9e37_79b9_7f4a_7c15u64;
            let mut below = |bound: u64| {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                random % bound
            };
            let space = max_keys as u64 * 2;
            let batch: Vec<Transaction> = (0..600u64)
                .map(|id| {
                    let count = if id % 97 == 5 { 300 } else { 4 };
                    let keys: Vec<String> = (0..2 * count).map(|_| key(below(space))).collect();
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    txn(
                        id,
                        commit + 100 - below(commit),
                        &refs[..count],
                        &refs[count..],
                    )
                })
                .collect();
            let decision = detector.check_batch(&batch).unwrap();
            let mut accepted: HashMap<Vec<u8>, TxnId> = HashMap::new();
            for (txn, outcome) in batch.iter().zip(&decision.outcomes) {
                let sets = [
                    (ConflictKind::WriteWrite, &txn.writes),
                    (ConflictKind::ReadWrite, &txn.reads),
                ];
                let expected = sets.iter().find_map(|&(kind, keys)| {
                    keys.iter().find_map(|k| {
                        let lost_to = match detector.last_commit(k) {
                            Some(c) if c > txn.start_ts => Some(LostTo::Commit(c)),
                            _ => accepted.get(k).map(|&id| LostTo::BatchMember(id)),
                        };
                        lost_to.map(|lost_to| Conflict {
                            txn_id: txn.id,
                            kind,
                            key: Some(k.to_vec()),
                            lost_to,
                        })
                    })
                });
                if expected.is_none() {
                    for k in txn.writes.iter() {
                        accepted.entry(k.to_vec()).or_insert(txn.id);
                    }
                }
                assert_eq!(
                    outcome.as_deref(),
                    expected.as_ref(),
                    "{max_keys}: {}",
                    txn.id
                );
            }
            let rejected = decision.rejected().count();
            assert!(
                rejected > 0 && rejected < batch.len(),
                "{max_keys}: {rejected}"
            );
        }
    }

    #[test]
    fn raise_low_watermark_never_lowers() {
        let mut detector = detector(Isolation::Snapshot, 4);
        detector.raise_low_watermark(ts(50));
        detector.raise_low_watermark(ts(20));
        assert_eq!(detector.low_watermark(), Some(ts(50)));
    }

    #[test]
    fn partition_first_fit() {
        let batch = [
            txn(1, 0, &["r"], &["a"]),
            txn(2, 0, &[], &["a"]),
            txn(3, 0, &[], &["r"]),
            txn(4, 0, &["a"], &["b"]),
            txn(5, 0, &[], &["a", "c"]),
        ];
        let snapshot = detector(Isolation::Snapshot, 4).partition(&batch).unwrap();
        assert_eq!(snapshot, vec![vec![0, 2, 3], vec![1], vec![4]]);
        let serializable = detector(Isolation::Serializable, 4)
            .partition(&batch)
            .unwrap();
        assert_eq!(serializable, vec![vec![0], vec![1, 2], vec![3], vec![4]]);
    }

    #[test]
    fn concurrent_writes_need_concurrent_clocks_and_a_shared_key() {
        let clock = |entries: &[(u16, u64)]| {
            Some(VectorClock::from_entries(entries.iter().copied()).unwrap())
        };
        let with = |id, writes: &[&str], clock| {
            Transaction::new(
                id,
                ts(1),
                [b""; 0],
                writes.iter().map(|k| k.as_bytes()),
                clock,
            )
        };
        let batch = [
            with(1, &["a", "b", "a"], clock(&[(1, 1)])),
            with(2, &["a", "b"], clock(&[(2, 1)])), // concurrent with 1
            with(3, &["a"], clock(&[(1, 1), (2, 1)])), // after 1 and 2
            with(4, &["b"], None),                  // no clock: skipped
            with(5, &["z"], clock(&[(3, 1)])),      // concurrent but no shared key
            with(6, &["a"], clock(&[(3, 1)])),      // concurrent with 1, 2 and 3
        ];
        let found = concurrent_writes(&batch).unwrap();
        let pairs: Vec<_> = found
            .iter()
            .map(|w| (w.first, w.second, w.keys.clone()))
            .collect();
        let a = || b"a".to_vec();
        assert_eq!(
            pairs,
            vec![
                (0, 1, vec![a(), b"b".to_vec()]),
                (0, 5, vec![a()]),
                (1, 5, vec![a()]),
                (2, 5, vec![a()]),
            ]
        );
    }
}
