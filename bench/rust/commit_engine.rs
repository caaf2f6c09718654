//! The server's Rust share of a `CommitStream` message, without Python or gRPC: decode a message
//! of 1,000 transactions (8 fresh keys each, 4 read and 4 written), decide it (the engine's
//! steps, `sync` durability: one write and one `fdatasync` per message), encode the response,
//! with the default detector (1,000,000 keys) and decisions index (1,000,000 ids), warmed past
//! both bounds first.
//!
//! `cargo run --release --example commit_engine [MESSAGES]` prints the thread's CPU time per
//! transaction (the `fdatasync` wait is not CPU); `MESSAGE_TXNS=4000` decides messages of 4,000
//! (a server whose client merges concurrent calls sees messages of several thousand). Under `valgrind --tool=callgrind
//! --collect-atstart=no --toggle-collect=*measured_messages*`, instructions per function; add
//! `--cache-sim=yes --D1=32768,8,64 --LL=33554432,16,64` (this host's L1d and L3) for the cache
//! misses per function, a figure that does not move with the host's load.

use std::hint::black_box;

use _core::commit::stream::StreamPool;
use _core::commit::{wire, CommitEngine, Durability, EngineConfig, Request};
use _core::hlc::{Clock, ClockConfig};

/// Transactions a message (`MESSAGE_TXNS`, 1,000 unless set: the server sees messages of several
/// thousand when its client merges concurrent calls).
fn per_message() -> u64 {
    std::env::var("MESSAGE_TXNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn message(clock: &Clock, first_id: u64, per_message: u64) -> Vec<u8> {
    let start = clock.now().expect("clock");
    let mut out = Vec::new();
    for id in first_id..first_id + per_message {
        let keys: Vec<Vec<u8>> = (0..8).map(|k| format!("s{id}/{k}").into_bytes()).collect();
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

#[inline(never)]
fn measured_messages(
    engine: &mut CommitEngine,
    clock: &Clock,
    pool: &mut StreamPool,
    messages: &[Vec<u8>],
) -> usize {
    let mut response_bytes = 0;
    for bytes in messages {
        let (part, decoded) = pool.decode(bytes);
        decoded.expect("a well-formed message");
        let requests: Vec<Request<'_>> = part.transactions().iter().map(Request::Commit).collect();
        let ids: Vec<u64> = requests.iter().map(Request::txn_id).collect();
        let answers = engine.process(clock, &requests);
        drop(requests);
        let (response, counts) = part.shape.encode_response(&ids, &answers);
        assert_eq!(counts.committed as usize, ids.len());
        response_bytes += black_box(response).len();
        pool.recycle(part);
    }
    response_bytes
}

fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("hlc-commit-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Clock::new(ClockConfig::new(1, 500_000));
    // `DURABILITY=memory` leaves out the log's write and fdatasync (the engine's own work alone).
    let durability = match std::env::var("DURABILITY").as_deref() {
        Ok("memory") => Durability::Memory,
        _ => Durability::Sync,
    };
    let mut config = EngineConfig::new(durability, Some(dir.clone()));
    if let Some(keys) = std::env::var("KEYS").ok().and_then(|k| k.parse().ok()) {
        config.max_keys = keys;
    }
    if let Some(d) = std::env::var("DECISIONS").ok().and_then(|k| k.parse().ok()) {
        config.retained_decisions = d;
    }
    let (mut engine, _) = CommitEngine::open(config, &clock).expect("engine");
    let mut pool = StreamPool::default();
    let per_message = per_message();
    let mut next_id = 1;
    // Warm past both bounds: 1,000,000 decisions, 4,000,000 written keys (`WARM_MESSAGES`
    // messages of 1,000; fewer for a quick instruction count under callgrind).
    let warm: u64 = std::env::var("WARM_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    for _ in 0..warm {
        let bytes = message(&clock, next_id, per_message);
        next_id += per_message;
        measured_messages(&mut engine, &clock, &mut pool, &[bytes]);
    }
    // Each message takes its start just before it is sent, as a client does (a start older
    // than a large share of the table's writes may be refused as too old).
    let mut cpu = 0;
    for _ in 0..count {
        let bytes = message(&clock, next_id, per_message);
        next_id += per_message;
        let before = thread_cpu_ns();
        measured_messages(&mut engine, &clock, &mut pool, &[bytes]);
        cpu += thread_cpu_ns() - before;
    }
    println!(
        "{count} messages of {per_message}: CPU {:.2} us per transaction",
        cpu as f64 / 1_000.0 / (count * per_message) as f64
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
