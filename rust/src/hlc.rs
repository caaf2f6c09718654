//! The hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).
//!
//! Guarantees, for one [`Clock`]:
//! - every timestamp it returns ([`Clock::now`], [`Clock::update`], [`Clock::reserve`]) is strictly
//!   greater than every timestamp it returned or observed before, from any thread, even when the
//!   physical clock steps backwards;
//! - `update(remote)` returns a timestamp greater than `remote`, unless `remote.physical` is ahead
//!   of the local physical clock by more than `max_offset_us`: then it fails with
//!   [`ClockError::Skew`] and the clock is unchanged;
//! - a clock built with a `floor` only returns timestamps strictly above it (restore after restart);
//! - a clock with a ceiling never returns a timestamp whose physical part passes it: the call fails
//!   with [`ClockError::CeilingReached`] and the clock is unchanged. The ceiling only rises
//!   ([`Clock::raise_ceiling`]); a server raises it only after durably saving the new limit, so
//!   the saved limit bounds everything handed out (TiDB PD's persisted timestamp window).
//!
//! Assumption: physical clocks of communicating nodes agree within `max_offset_us`. The clock
//! enforces it only on receive; measuring it is the skew monitor's job.
//!
//! The rules are the paper's, on the packed `(physical << 12 | logical)` form of [`Timestamp`]:
//! - send or local event: `l.c := max(l.c + 1, pt.0)`;
//! - receive of `m`:      `l.c := max(max(l.c, m.c) + 1, pt.0)`.
//!
//! Expanding the packed maximum gives exactly the paper's case analysis (`l == l' == l_m` →
//! `max(c, c_m) + 1`, and so on). A logical counter at its 12-bit maximum carries into physical:
//! the clock moves physical forward by one microsecond instead of wrapping or failing.
//!
//! "Unchanged" after a failed call includes the counters: a call reads the physical clock but
//! records the reading (and any backward jump it shows) only once it has succeeded, so a refused
//! `update` leaves `last`, `backward_jumps` and the highest reading seen as they were.
//!
//! State is one `AtomicU64` (the packed last timestamp) updated by compare-and-swap, so the clock
//! is lock-free and safe to share between threads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timestamp::{Timestamp, LOGICAL_BITS, MAX_PHYSICAL};

/// Largest `n` for [`Clock::reserve`]: 2^22 timestamps span at most 1024 µs of physical time, so
/// one reservation can push the clock at most about a millisecond ahead of the physical clock.
pub const MAX_RESERVE: u64 = 1 << 22;

/// A manually driven physical clock for tests: it reads what it was last set to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_us: AtomicU64,
}

impl ManualClock {
    pub fn new(start_us: u64) -> Result<Self, ClockError> {
        check_physical(start_us)?;
        Ok(Self {
            now_us: AtomicU64::new(start_us),
        })
    }

    pub fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::Acquire)
    }

    pub fn set(&self, us: u64) -> Result<(), ClockError> {
        check_physical(us)?;
        self.now_us.store(us, Ordering::Release);
        Ok(())
    }

    /// Moves the clock by `delta_us`, which may be negative to simulate a step backwards.
    pub fn advance(&self, delta_us: i64) -> Result<u64, ClockError> {
        let mut current = self.now_us();
        loop {
            let next =
                current
                    .checked_add_signed(delta_us)
                    .ok_or(ClockError::PhysicalOutOfRange(
                        i128::from(current) + i128::from(delta_us),
                    ))?;
            check_physical(next)?;
            match self.now_us.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }
}

fn check_physical(us: u64) -> Result<(), ClockError> {
    if us > MAX_PHYSICAL {
        return Err(ClockError::PhysicalOutOfRange(us.into()));
    }
    Ok(())
}

/// Where a [`Clock`] reads physical time. An enum rather than a trait object keeps the hot path
/// free of dynamic dispatch.
#[derive(Debug, Clone, Default)]
pub enum PhysicalSource {
    /// `CLOCK_REALTIME` in microseconds.
    #[default]
    System,
    Manual(Arc<ManualClock>),
}

impl PhysicalSource {
    pub fn now_us(&self) -> u64 {
        match self {
            Self::System => system_now_us(),
            Self::Manual(clock) => clock.now_us(),
        }
    }
}

/// Wall-clock microseconds since the Unix epoch; 0 before the epoch, clamped to the 52-bit range.
#[inline]
pub fn system_now_us() -> u64 {
    // u64 arithmetic on the parts: `Duration::as_micros` divides a u128, which costs a libcall on
    // the hottest path of `now()`.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            elapsed
                .as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(elapsed.subsec_micros()))
        })
        .min(MAX_PHYSICAL)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockError {
    /// A remote timestamp is further ahead of the local physical clock than `max_offset_us`.
    Skew {
        remote_physical: u64,
        local_physical: u64,
        max_offset_us: u64,
    },
    /// `reserve(n)` with `n` outside `1..=MAX_RESERVE`.
    InvalidReserve(u64),
    /// The 64-bit timestamp space is used up (physical would pass the year 2112).
    Exhausted,
    /// Handing out the timestamp would pass the clock's ceiling (its persisted window).
    CeilingReached {
        needed_physical: u64,
        ceiling_physical: u64,
    },
    PhysicalOutOfRange(i128),
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skew {
                remote_physical,
                local_physical,
                max_offset_us,
            } => write!(
                f,
                "remote timestamp physical={remote_physical} is {} us ahead of the local physical \
                 clock {local_physical}, more than max_offset_us={max_offset_us}",
                remote_physical - local_physical
            ),
            Self::InvalidReserve(n) => {
                write!(f, "reserve count must be in 1..={MAX_RESERVE}, got {n}")
            }
            Self::Exhausted => write!(
                f,
                "the clock has reached the largest representable timestamp (physical {MAX_PHYSICAL})"
            ),
            Self::CeilingReached {
                needed_physical,
                ceiling_physical,
            } => write!(
                f,
                "timestamp physical={needed_physical} would pass the clock's ceiling \
                 physical={ceiling_physical} (the persisted window has not been extended yet)"
            ),
            Self::PhysicalOutOfRange(us) => write!(
                f,
                "physical clock value must be in 0..={MAX_PHYSICAL} microseconds, got {us}"
            ),
        }
    }
}

impl std::error::Error for ClockError {}

/// `n` consecutive timestamps of one node: packed values `first ..= first + count - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimestampRange {
    first: u64,
    count: u64,
    node: u16,
}

impl TimestampRange {
    pub fn first(&self) -> Timestamp {
        Timestamp::from_packed(self.first, self.node)
    }

    pub fn last(&self) -> Timestamp {
        Timestamp::from_packed(self.first + (self.count - 1), self.node)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    pub fn contains(&self, ts: Timestamp) -> bool {
        ts.node() == self.node && ts.packed() >= self.first && ts.packed() - self.first < self.count
    }

    /// The `index`-th timestamp, or `None` past the end.
    pub fn get(&self, index: u64) -> Option<Timestamp> {
        (index < self.count).then(|| Timestamp::from_packed(self.first + index, self.node))
    }

    /// A range is valid when its last packed value does not overflow.
    pub fn new(first: Timestamp, count: u64) -> Option<Self> {
        if count == 0 {
            return None;
        }
        first.packed().checked_add(count - 1)?;
        Some(Self {
            first: first.packed(),
            count,
            node: first.node(),
        })
    }
}

#[derive(Debug)]
pub struct ClockConfig {
    pub node: u16,
    pub max_offset_us: u64,
    pub source: PhysicalSource,
    pub floor: Option<Timestamp>,
    /// A physical reading more than this far below the highest one seen counts as a backward jump;
    /// smaller drops are not counted (default `max_offset_us / 10`, as CockroachDB's check). The
    /// drops it hides are mostly not the clock's: a reading is recorded after the call that took
    /// it succeeds, and threads race between the two, so a thread that was descheduled records a
    /// reading older than one another thread recorded meanwhile. A real step back smaller than the
    /// tolerance goes uncounted too, and is harmless: it is well inside `max_offset_us`.
    pub backward_jump_tolerance_us: u64,
    /// Largest physical part the clock may hand out; `None` means no ceiling.
    pub ceiling_physical: Option<u64>,
}

impl ClockConfig {
    pub fn new(node: u16, max_offset_us: u64) -> Self {
        Self {
            node,
            max_offset_us,
            source: PhysicalSource::System,
            floor: None,
            backward_jump_tolerance_us: max_offset_us / 10,
            ceiling_physical: None,
        }
    }
}

#[derive(Debug)]
pub struct Clock {
    /// Packed `(physical, logical)` of the latest timestamp returned or observed.
    state: AtomicU64,
    /// Highest physical reading seen, for counting backward jumps.
    last_physical: AtomicU64,
    backward_jumps: AtomicU64,
    /// Largest packed value the clock may hand out (`u64::MAX`: no ceiling). Only rises.
    ceiling: AtomicU64,
    node: u16,
    max_offset_us: u64,
    backward_jump_tolerance_us: u64,
    source: PhysicalSource,
}

impl Clock {
    pub fn new(config: ClockConfig) -> Self {
        Self {
            state: AtomicU64::new(config.floor.map_or(0, Timestamp::packed)),
            last_physical: AtomicU64::new(0),
            backward_jumps: AtomicU64::new(0),
            ceiling: AtomicU64::new(config.ceiling_physical.map_or(u64::MAX, ceiling_packed)),
            node: config.node,
            max_offset_us: config.max_offset_us,
            backward_jump_tolerance_us: config.backward_jump_tolerance_us,
            source: config.source,
        }
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    pub fn max_offset_us(&self) -> u64 {
        self.max_offset_us
    }

    pub fn source(&self) -> &PhysicalSource {
        &self.source
    }

    /// How many times the physical clock was seen to step backwards by more than the tolerance.
    pub fn backward_jumps(&self) -> u64 {
        self.backward_jumps.load(Ordering::Relaxed)
    }

    /// The latest timestamp returned or observed (the floor before any), without advancing.
    pub fn last(&self) -> Timestamp {
        Timestamp::from_packed(self.state.load(Ordering::Acquire), self.node)
    }

    /// The largest physical part this clock may hand out, or `None` without a ceiling.
    pub fn ceiling_physical(&self) -> Option<u64> {
        let ceiling = self.ceiling.load(Ordering::Acquire);
        (ceiling != u64::MAX).then_some(ceiling >> LOGICAL_BITS)
    }

    /// Raises the ceiling to `physical` (never lowers it, and a clock without a ceiling stays
    /// without); returns the ceiling now in force. Call it only after the new limit is durable.
    pub fn raise_ceiling(&self, physical: u64) -> Result<u64, ClockError> {
        check_physical(physical)?;
        let previous = self
            .ceiling
            .fetch_max(ceiling_packed(physical), Ordering::AcqRel);
        Ok(previous.max(ceiling_packed(physical)) >> LOGICAL_BITS)
    }

    /// Moves the clock to at least `floor` (never back), so that everything it hands out from now
    /// on is above it: a restore after a restart. Unlike `update`, a floor ahead of the physical
    /// clock is taken whatever the distance: it is this oracle's own history, not a remote claim,
    /// and refusing it would hand out timestamps below what was already used.
    pub fn raise_floor(&self, floor: Timestamp) {
        self.state.fetch_max(floor.packed(), Ordering::AcqRel);
    }

    /// Reads the physical clock, counting backward jumps.
    pub fn physical_now(&self) -> u64 {
        let now = self.source.now_us();
        self.record_physical(now);
        now
    }

    /// Records a physical reading: the highest seen, and a backward jump when `now` is more than
    /// the tolerance below it. Called only after the call that took the reading has succeeded.
    #[inline]
    fn record_physical(&self, now: u64) {
        let previous = self.last_physical.load(Ordering::Relaxed);
        if now > previous {
            self.last_physical.fetch_max(now, Ordering::Relaxed);
        } else if previous - now > self.backward_jump_tolerance_us
            && self
                .last_physical
                .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.backward_jumps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send or local event.
    pub fn now(&self) -> Result<Timestamp, ClockError> {
        let pt = self.source.now_us();
        let first = self.advance(pt, 0, 1)?;
        self.record_physical(pt);
        Ok(self.stamp(first))
    }

    /// Receive event: `remote` was observed in a message. On error nothing changes, not even the
    /// backward-jump count.
    pub fn update(&self, remote: Timestamp) -> Result<Timestamp, ClockError> {
        let pt = self.source.now_us();
        if remote.physical() > pt.saturating_add(self.max_offset_us) {
            return Err(ClockError::Skew {
                remote_physical: remote.physical(),
                local_physical: pt,
                max_offset_us: self.max_offset_us,
            });
        }
        let first = self.advance(pt, remote.packed(), 1)?;
        self.record_physical(pt);
        Ok(self.stamp(first))
    }

    /// `n` consecutive timestamps in one atomic step; the cost does not depend on `n`.
    pub fn reserve(&self, n: u64) -> Result<TimestampRange, ClockError> {
        if n == 0 || n > MAX_RESERVE {
            return Err(ClockError::InvalidReserve(n));
        }
        let pt = self.source.now_us();
        let first = self.advance(pt, 0, n)?;
        self.record_physical(pt);
        Ok(TimestampRange {
            first,
            count: n,
            node: self.node,
        })
    }

    fn stamp(&self, packed: u64) -> Timestamp {
        Timestamp::from_packed(packed, self.node)
    }

    /// Moves the state past `max(state, seen)` and `pt` by `count` ticks; returns the first tick.
    fn advance(&self, pt: u64, seen: u64, count: u64) -> Result<u64, ClockError> {
        let physical_floor = pt.min(MAX_PHYSICAL) << LOGICAL_BITS;
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let first = current
                .max(seen)
                .checked_add(1)
                .ok_or(ClockError::Exhausted)?
                .max(physical_floor);
            let last = first.checked_add(count - 1).ok_or(ClockError::Exhausted)?;
            // A stale (lower) ceiling only refuses more, so one load per attempt is enough.
            let ceiling = self.ceiling.load(Ordering::Acquire);
            if last > ceiling {
                return Err(ClockError::CeilingReached {
                    needed_physical: last >> LOGICAL_BITS,
                    ceiling_physical: ceiling >> LOGICAL_BITS,
                });
            }
            match self.state.compare_exchange_weak(
                current,
                last,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(first),
                Err(actual) => current = actual,
            }
        }
    }
}

/// The packed value of the last timestamp within a physical microsecond.
fn ceiling_packed(physical: u64) -> u64 {
    (physical.min(MAX_PHYSICAL) << LOGICAL_BITS) | crate::timestamp::MAX_LOGICAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::MAX_LOGICAL;

    const NODE: u16 = 7;

    fn manual_clock(start_us: u64, floor: Option<Timestamp>) -> (Clock, Arc<ManualClock>) {
        let physical = Arc::new(ManualClock::new(start_us).unwrap());
        let mut config = ClockConfig::new(NODE, 500);
        config.source = PhysicalSource::Manual(physical.clone());
        config.floor = floor;
        config.backward_jump_tolerance_us = 0;
        (Clock::new(config), physical)
    }

    fn ts(physical: u64, logical: u64) -> Timestamp {
        Timestamp::new(physical, logical, u64::from(NODE)).unwrap()
    }

    fn remote(physical: u64, logical: u64) -> Timestamp {
        Timestamp::new(physical, logical, 99).unwrap()
    }

    enum Event {
        /// Set the physical clock.
        Physical(u64),
        Send,
        Receive(Timestamp),
    }

    /// Each row: an event and the (physical, logical) the clock must return after it.
    #[test]
    fn send_and_receive_rules() {
        use Event::*;
        let table: Vec<(Event, Option<(u64, u64)>)> = vec![
            (Send, Some((100, 0))),                     // pt ahead of l: take pt, c = 0
            (Send, Some((100, 1))),                     // pt == l: c + 1
            (Physical(90), None),                       // physical clock steps back
            (Send, Some((100, 2))),                     // l stays, c + 1
            (Receive(remote(100, 9)), Some((100, 10))), // l == l' == l_m: max(c, c_m) + 1
            (Receive(remote(100, 3)), Some((100, 11))), // l == l' > ... c_m smaller: max + 1
            (Receive(remote(99, 50)), Some((100, 12))), // l == l' > l_m: c + 1
            (Receive(remote(150, 4)), Some((150, 5))),  // remote wins (within max offset): c_m + 1
            (Physical(200), None),
            (Receive(remote(150, 9)), Some((200, 0))), // pt wins: c = 0
            (Receive(remote(200, 0)), Some((200, 1))),
            (Send, Some((200, 2))),
        ];
        let (clock, physical) = manual_clock(100, None);
        for (row, (event, expected)) in table.into_iter().enumerate() {
            let got = match event {
                Physical(us) => {
                    physical.set(us).unwrap();
                    continue;
                }
                Send => clock.now().unwrap(),
                Receive(m) => clock.update(m).unwrap(),
            };
            let (p, l) = expected.unwrap();
            assert_eq!(got, ts(p, l), "row {row}");
            assert_eq!(clock.last(), got, "row {row}");
        }
    }

    #[test]
    fn remote_past_max_offset_is_refused_and_leaves_clock_unchanged() {
        let (clock, _) = manual_clock(1_000, None);
        let before = clock.now().unwrap();
        let err = clock.update(remote(1_501, 0)).unwrap_err();
        assert_eq!(
            err,
            ClockError::Skew {
                remote_physical: 1_501,
                local_physical: 1_000,
                max_offset_us: 500
            }
        );
        assert_eq!(clock.last(), before);
        // Exactly at the max offset is still accepted.
        assert_eq!(clock.update(remote(1_500, 0)).unwrap(), ts(1_500, 1));
    }

    /// A refused call changes nothing observable: not `last`, not `backward_jumps`, and not the
    /// highest physical reading seen (which decides what a later reading counts as a jump). Each
    /// row: an event, whether it succeeds, and `backward_jumps` after it. Tolerance 0, max offset
    /// 500 µs.
    #[test]
    fn refused_calls_leave_the_counters_unchanged() {
        use Event::*;
        let table: Vec<(Event, bool, u64)> = vec![
            (Send, true, 0), // highest reading seen: 1_000
            (Physical(900), false, 0),
            (Receive(remote(1_401, 0)), false, 0), // refused: the step back is not recorded...
            (Send, true, 1),                       // ...the next call that succeeds counts it
            (Physical(5_000), false, 0),
            (Receive(remote(5_501, 0)), false, 1), // refused: 5_000 is not recorded as seen...
            (Physical(1_000), false, 0),
            (Send, true, 1), // ...so 1_000 is not a step back from it
            (Physical(500), false, 0),
            (Receive(remote(1_000, 0)), true, 2),
        ];
        let (clock, physical) = manual_clock(1_000, None);
        for (row, (event, succeeds, jumps)) in table.into_iter().enumerate() {
            let before = clock.last();
            let result = match event {
                Physical(us) => {
                    physical.set(us).unwrap();
                    continue;
                }
                Send => clock.now(),
                Receive(m) => clock.update(m),
            };
            assert_eq!(result.is_ok(), succeeds, "row {row}: {result:?}");
            if !succeeds {
                assert_eq!(clock.last(), before, "row {row}");
            }
            assert_eq!(clock.backward_jumps(), jumps, "row {row}");
        }
    }

    #[test]
    fn refused_for_the_ceiling_leaves_the_counters_unchanged() {
        let physical = Arc::new(ManualClock::new(1_000).unwrap());
        let mut config = ClockConfig::new(NODE, 500);
        config.source = PhysicalSource::Manual(physical.clone());
        config.backward_jump_tolerance_us = 0;
        config.floor = Some(ts(2_000, MAX_LOGICAL));
        config.ceiling_physical = Some(2_000);
        let clock = Clock::new(config);
        physical.set(3_000).unwrap(); // past the ceiling: refused, not recorded
        assert!(clock.now().is_err());
        assert!(clock.reserve(1).is_err());
        assert!(clock.update(remote(1_000, 0)).is_err());
        physical.set(1_000).unwrap();
        clock.raise_ceiling(2_001).unwrap();
        assert_eq!(clock.now().unwrap(), ts(2_001, 0));
        assert_eq!(clock.backward_jumps(), 0);
    }

    #[test]
    fn logical_overflow_moves_physical_forward() {
        let (clock, _) = manual_clock(10, Some(ts(10, MAX_LOGICAL - 1)));
        assert_eq!(clock.now().unwrap(), ts(10, MAX_LOGICAL));
        assert_eq!(clock.now().unwrap(), ts(11, 0));
    }

    #[test]
    fn floor_is_strictly_below_first_timestamp() {
        let floor = Timestamp::new(5_000, 3, 1).unwrap();
        let (clock, _) = manual_clock(10, Some(floor));
        assert_eq!(clock.last().packed(), floor.packed());
        let first = clock.now().unwrap();
        assert!(first > floor);
        assert_eq!(first, ts(5_000, 4));
    }

    #[test]
    fn reserve_is_contiguous_and_disjoint() {
        let (clock, _) = manual_clock(1_000, None);
        let a = clock.reserve(5_000).unwrap();
        let b = clock.reserve(1).unwrap();
        assert_eq!(a.first(), ts(1_000, 0));
        assert_eq!(a.count(), 5_000);
        assert_eq!(a.last().packed() - a.first().packed(), 4_999);
        assert_eq!(b.first().packed(), a.last().packed() + 1);
        assert!(a.contains(a.last()) && !a.contains(b.first()));
        assert_eq!(clock.reserve(0), Err(ClockError::InvalidReserve(0)));
        assert_eq!(
            clock.reserve(MAX_RESERVE + 1),
            Err(ClockError::InvalidReserve(MAX_RESERVE + 1))
        );
    }

    #[test]
    fn backward_jumps_are_counted_once_per_step() {
        let (clock, physical) = manual_clock(1_000, None);
        clock.now().unwrap();
        physical.set(900).unwrap();
        let after_jump = clock.now().unwrap();
        assert!(after_jump > ts(1_000, 0));
        clock.now().unwrap();
        assert_eq!(clock.backward_jumps(), 1);
    }

    #[test]
    fn exhausted_space_is_an_error_not_a_wrap() {
        let top = Timestamp::new(MAX_PHYSICAL, MAX_LOGICAL, 0).unwrap();
        let (clock, _) = manual_clock(10, Some(top));
        assert_eq!(clock.now(), Err(ClockError::Exhausted));
        assert_eq!(clock.last().packed(), top.packed());
    }

    #[test]
    fn threads_get_unique_increasing_timestamps() {
        let clock = Arc::new(Clock::new(ClockConfig::new(1, 500_000)));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || {
                    (0..20_000)
                        .map(|_| clock.now().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            let stamps = handle.join().unwrap();
            assert!(stamps.windows(2).all(|w| w[0] < w[1]));
            all.extend(stamps);
        }
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[test]
    fn ceiling_refuses_and_leaves_clock_unchanged_until_raised() {
        let (unbounded, _) = manual_clock(1_000, None);
        assert_eq!(unbounded.ceiling_physical(), None);
        // Without a ceiling there is nothing to raise: it stays unbounded.
        assert_eq!(unbounded.raise_ceiling(1_001).unwrap(), MAX_PHYSICAL);
        assert_eq!(unbounded.ceiling_physical(), None);

        let physical = Arc::new(ManualClock::new(1_000).unwrap());
        let mut config = ClockConfig::new(NODE, 500);
        config.source = PhysicalSource::Manual(physical.clone());
        config.ceiling_physical = Some(1_000);
        let clock = Clock::new(config);
        assert_eq!(clock.raise_ceiling(1_001).unwrap(), 1_001);
        let first = clock.now().unwrap();
        assert_eq!(first, ts(1_000, 0));
        // The whole of microsecond 1_001 is usable, nothing past it.
        let range = clock.reserve(2 * (MAX_LOGICAL + 1) - 1).unwrap();
        assert_eq!(range.last(), ts(1_001, MAX_LOGICAL));
        let before = clock.last();
        let refused = ClockError::CeilingReached {
            needed_physical: 1_002,
            ceiling_physical: 1_001,
        };
        assert_eq!(clock.now(), Err(refused.clone()));
        assert_eq!(clock.reserve(1), Err(refused.clone()));
        assert_eq!(clock.update(remote(1_002, 0)), Err(refused));
        physical.set(5_000).unwrap();
        assert!(matches!(
            clock.now(),
            Err(ClockError::CeilingReached {
                needed_physical: 5_000,
                ..
            })
        ));
        assert_eq!(clock.last(), before);
        // Lowering is ignored; raising lets the clock move on.
        assert_eq!(clock.raise_ceiling(10).unwrap(), 1_001);
        assert_eq!(clock.raise_ceiling(6_000).unwrap(), 6_000);
        assert_eq!(clock.now().unwrap(), ts(5_000, 0));
        assert!(clock.raise_ceiling(MAX_PHYSICAL + 1).is_err());
    }

    #[test]
    fn ceiling_from_config() {
        let mut config = ClockConfig::new(NODE, 500);
        config.source = PhysicalSource::Manual(Arc::new(ManualClock::new(100).unwrap()));
        config.ceiling_physical = Some(99);
        let clock = Clock::new(config);
        assert_eq!(clock.ceiling_physical(), Some(99));
        assert!(clock.now().is_err());
    }

    #[test]
    fn manual_clock_rejects_out_of_range() {
        let manual = ManualClock::new(5).unwrap();
        assert!(manual.advance(-6).is_err());
        assert_eq!(manual.now_us(), 5);
        assert!(manual.set(MAX_PHYSICAL + 1).is_err());
        assert_eq!(manual.advance(-5).unwrap(), 0);
    }
}
