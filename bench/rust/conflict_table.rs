//! `check_batch` plus `record` per transaction of 8 keys (4 read, 4 written, serializable)
//! against a conflict detector that remembers 1,000,000 keys, in batches of 1,000: the detector's
//! share of the commit path, without Python. Every transaction of a batch starts after every
//! commit before the batch, and half of its keys are in the history, so nearly all are accepted
//! (only members of one batch conflict) and every write records a key (a new one evicts the
//! oldest of its candidates). The record loop prefetches ahead in two steps (see
//! `RECORD_PREFETCH_AHEAD`).
//!
//! `cargo run --release --example conflict_table [BATCHES [MAX_KEYS]]` prints nanoseconds per
//! transaction: the thread's CPU time in `check_batch` and in the record loop over all batches
//! (time spent descheduled on a loaded host left out), and the median batch's wall time. Under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=*measured_batches*` the
//! instruction count of the measured batches, less that of `prepare`, divided by their
//! transactions is the figure a loaded host cannot disturb.

use std::hint::black_box;
use std::time::Instant;

use _core::conflict::{ConflictDetector, Isolation, Transaction};
use _core::timestamp::Timestamp;

/// The remembered keys unless the second argument says otherwise (a small table that stays in the
/// cache shows the cost without misses).
const MAX_KEYS: usize = 1_000_000;
const BATCH: usize = 1_000;
const READS: usize = 4;
const WRITES: usize = 4;

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The process's anonymous memory on transparent huge pages, in kB (Linux), as text.
fn huge_pages() -> String {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("AnonHugePages:"))
                .map(|line| {
                    line.split_whitespace()
                        .skip(1)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn key(n: u64) -> Vec<u8> {
    format!("user:{n:010}").into_bytes()
}

/// A xorshift generator: the same workload every run, no dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Decisions the record loop looks ahead when it prefetches the rest of the buckets its writes
/// change; the lines that choose those buckets are prefetched twice as far ahead. (The commit engine's `record`
/// step, as of this writing, prefetches whole buckets four decisions ahead in one step: record
/// 263 to 284 ns a transaction against 217 to 221 ns for this, same runs.)
const RECORD_PREFETCH_AHEAD: usize = 1;

/// Per transaction: each batch's wall time, and the thread's CPU time in the check and in the
/// record loop over all batches.
struct Measured {
    wall_per_txn: Vec<f64>,
    check_cpu_ns: u64,
    record_cpu_ns: u64,
    accepted: usize,
}

/// A batch's transactions started after every commit before it (as a client's do), and are in
/// the cache, as the commit engine's are just after it decoded them. Not inlined, so that a
/// callgrind count can leave it out.
#[inline(never)]
fn prepare(batch: &mut [Transaction], newest_commit: u64) {
    for txn in batch.iter_mut() {
        txn.start_ts = Timestamp::from_packed(newest_commit, 0);
        black_box(
            txn.reads
                .hashes()
                .iter()
                .chain(txn.writes.hashes())
                .sum::<u64>(),
        );
    }
}

#[inline(never)]
fn measured_batches(
    detector: &mut ConflictDetector,
    batches: &mut [Vec<Transaction>],
    next_commit: &mut u64,
) -> Measured {
    let mut measured = Measured {
        wall_per_txn: Vec::with_capacity(batches.len()),
        check_cpu_ns: 0,
        record_cpu_ns: 0,
        accepted: 0,
    };
    let mut accepted = Vec::with_capacity(BATCH);
    for batch in batches {
        prepare(batch, *next_commit);
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let decision = detector.check_batch(batch).expect("unique ids");
        let cpu_checked = thread_cpu_ns();
        accepted.clear();
        accepted.extend(decision.accepted());
        measured.accepted += accepted.len();
        for &index in accepted.iter().take(2 * RECORD_PREFETCH_AHEAD) {
            detector.prefetch_writes_choice(&batch[index]);
        }
        for &index in accepted.iter().take(RECORD_PREFETCH_AHEAD) {
            detector.prefetch_writes_rest(&batch[index]);
        }
        for (at, &index) in accepted.iter().enumerate() {
            if let Some(&ahead) = accepted.get(at + 2 * RECORD_PREFETCH_AHEAD) {
                detector.prefetch_writes_choice(&batch[ahead]);
            }
            if let Some(&ahead) = accepted.get(at + RECORD_PREFETCH_AHEAD) {
                detector.prefetch_writes_rest(&batch[ahead]);
            }
            *next_commit += 1;
            detector
                .record(&batch[index], Timestamp::from_packed(*next_commit, 0))
                .expect("commit after start");
        }
        black_box(&decision);
        let cpu_recorded = thread_cpu_ns();
        measured.check_cpu_ns += cpu_checked - cpu_started;
        measured.record_cpu_ns += cpu_recorded - cpu_checked;
        measured
            .wall_per_txn
            .push(started.elapsed().as_nanos() as f64 / batch.len() as f64);
    }
    measured
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let max_keys: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(MAX_KEYS);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut detector = ConflictDetector::new(Isolation::Serializable, max_keys).expect("max_keys");
    // The history: 1,000,000 distinct keys, written 4 to a transaction.
    let mut next_commit = 1u64;
    for n in 0..(max_keys / WRITES) as u64 {
        let writes: Vec<Vec<u8>> = (0..WRITES as u64).map(|k| key(n * 4 + k)).collect();
        let txn = Transaction::new(
            1 << 40 | n,
            Timestamp::from_packed(0, 0),
            [b""; 0],
            writes,
            None,
        );
        next_commit += 1;
        detector
            .record(&txn, Timestamp::from_packed(next_commit, 0))
            .expect("commit after start");
    }
    // Keys drawn from twice the history's range: about half are remembered.
    let space = 2 * max_keys as u64;
    // Set again before each batch (see `measured_batches`).
    let start = Timestamp::from_packed(next_commit, 0);
    let mut made: Vec<Vec<Transaction>> = (0..batches)
        .map(|b| {
            (0..BATCH)
                .map(|t| {
                    let keys: Vec<Vec<u8>> = (0..READS + WRITES)
                        .map(|_| key(random.below(space)))
                        .collect();
                    Transaction::new(
                        (b * BATCH + t) as u64 + 1,
                        start,
                        keys[..READS].to_vec(),
                        keys[READS..].to_vec(),
                        None,
                    )
                })
                .collect()
        })
        .collect();
    let mut measured = measured_batches(&mut detector, &mut made, &mut next_commit);
    let txns = (batches * BATCH) as f64;
    let per_txn = &mut measured.wall_per_txn;
    per_txn.sort_by(f64::total_cmp);
    println!(
        "{} batches of {BATCH}: CPU {:.1} ns per transaction (check {:.1}, record {:.1}), \
         median batch's wall {:.1} ns; {:.1}% accepted; remembered {}, {} bytes ({:.1} per key), \
         {} on huge pages",
        batches,
        (measured.check_cpu_ns + measured.record_cpu_ns) as f64 / txns,
        measured.check_cpu_ns as f64 / txns,
        measured.record_cpu_ns as f64 / txns,
        per_txn[per_txn.len() / 2],
        100.0 * measured.accepted as f64 / txns,
        detector.len(),
        detector.memory_bytes(),
        detector.memory_bytes() as f64 / max_keys as f64,
        huge_pages(),
    );
}
