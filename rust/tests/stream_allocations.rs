//! The server's `CommitStream` path allocates per message and per batch, never per transaction:
//! a message of 1,000 transactions decoded (into a part from the pool), decided, answered and
//! given back makes no more allocations than a message of 100. Its own test binary, because it
//! counts allocations with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use _core::commit::stream::StreamPool;
use _core::commit::{wire, CommitEngine, Durability, EngineConfig, Request};
use _core::hlc::{Clock, ClockConfig};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the counter may already be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A `CommitStreamRequest` of `count` transactions of 4 read and 4 written fresh keys.
fn message(clock: &Clock, first_id: u64, count: u64) -> Vec<u8> {
    let start = clock.now().expect("clock");
    let mut out = Vec::new();
    for id in first_id..first_id + count {
        let keys: Vec<Vec<u8>> = (0..8)
            .map(|k| format!("key{id}/{k}").into_bytes())
            .collect();
        wire::encode_transaction(
            &mut out,
            id,
            start,
            keys[..4].iter().map(Vec::as_slice),
            keys[4..].iter().map(Vec::as_slice),
        );
    }
    out
}

/// Decodes, decides and answers one message as the server does; returns the allocations made.
fn answer(engine: &mut CommitEngine, clock: &Clock, pool: &mut StreamPool, bytes: &[u8]) -> u64 {
    let before = allocations();
    let (part, decoded) = pool.decode(bytes);
    decoded.expect("a well-formed message");
    let requests: Vec<Request<'_>> = part.transactions().iter().map(Request::Commit).collect();
    let ids: Vec<u64> = requests.iter().map(Request::txn_id).collect();
    let answers = engine.process(clock, &requests);
    drop(requests);
    let (response, counts) = part.shape.encode_response(&ids, &answers);
    assert_eq!(counts.committed, ids.len() as u64);
    pool.recycle(part);
    drop((response, answers, ids));
    allocations() - before
}

#[test]
fn a_message_allocates_per_message_not_per_transaction() {
    let clock = Clock::new(ClockConfig::new(1, 500_000));
    let mut config = EngineConfig::new(Durability::Memory, None);
    config.max_keys = 100_000;
    config.retained_decisions = 2_000;
    let (mut engine, _) = CommitEngine::open(config, &clock).expect("engine");
    let mut pool = StreamPool::default();
    let mut next_id = 1;
    let mut next = |count| {
        let bytes = message(&clock, next_id, count);
        next_id += count;
        bytes
    };
    // Warm: the pool's parts and the decisions index reach their sizes.
    for _ in 0..4 {
        let bytes = next(1_000);
        answer(&mut engine, &clock, &mut pool, &bytes);
    }
    let (small, large) = (next(100), next(1_000));
    let per_small = answer(&mut engine, &clock, &mut pool, &small);
    let per_large = answer(&mut engine, &clock, &mut pool, &large);
    eprintln!("allocations: {per_small} for 100, {per_large} for 1,000");
    assert!(
        per_large <= per_small + 8 && per_large < 100,
        "a message of 100 made {per_small} allocations, one of 1,000 made {per_large}"
    );
}
