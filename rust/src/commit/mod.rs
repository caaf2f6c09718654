//! The group-commit hot path: one call per batch decides, timestamps, makes durable and records.
//!
//! [`CommitEngine::decide`] takes a batch of requests (commit a transaction, or abort an id) and,
//! in one pass without the GIL, runs these steps (each a method of the same name):
//! 1. `triage`: validates each transaction (bad input gets an error and never reaches the log),
//!    and answers ids that are already decided with their first decision (idempotency), after
//!    checking that a resubmitted transaction has the same contents (a fingerprint of start
//!    timestamp, read and write sets);
//! 2. `check_conflicts`: ONE `check_batch` over the new transactions (first committer wins);
//! 3. `take_timestamps`: the commit timestamps from the clock in ONE `reserve` (after moving the
//!    clock past the newest start timestamp, so every commit timestamp is greater than its
//!    transaction's start and than every earlier commit timestamp);
//!    `decide_requested_aborts`: the aborts asked for by id, with their fence;
//! 4. `make_durable`: encodes every new decision (commits, conflict aborts, requested aborts) and
//!    hands the records to the durable step ([`durable`]: the local commit log in ONE write and,
//!    in `sync` durability, ONE `fdatasync`; or pieces for an external store, clustered mode);
//! 5. `record`: the commits in the conflict detector, every decision in the decisions index;
//! 6. the answers: at once, or (external step) once the batch's pieces are confirmed durable.
//!
//! [`CommitEngine::process`] is `decide` for the local log (answers at once).
//!
//! Recovery ([`CommitEngine::open`]) replays the log: the decisions index (for `status` and
//! idempotency, within `retained_decisions`), the detector's history, and the clock's floor (the
//! clock is moved past the newest logged commit timestamp).
//!
//! Retention: when the log has more than `retain_segments` segments, a checkpoint (the newest
//! decision timestamp it covers) is written and the covered segments are deleted; after a restart
//! the detector's low watermark starts at that timestamp, so a transaction that started before it
//! is refused as too old rather than checked against forgotten history or forgotten decisions.
//! The same holds in memory: when the decisions index forgets its oldest decisions (past
//! `retained_decisions`), the low watermark rises to them, so a late resubmission of a forgotten
//! id (or a late commit of an id whose abort was forgotten) is refused, never decided again.
//!
//! Too old, refused or aborted: a transaction that started at or below the detector's low
//! watermark cannot have its conflicts checked. When its decision may have been forgotten (its
//! start is at or below `decisions_forgotten_through`: a checkpoint, or the decisions index's
//! cap) it is refused ([`SubmitError::StartTooOld`]), since deciding it could flip a forgotten
//! commit. Otherwise the index proves it undecided, and `check_conflicts` decides it Aborted
//! (conflict kind too old), recorded and made durable like every decision, so it can never flip:
//! Apache Omid's rule for the transactions a new leader inherits (its low watermark is the
//! previous leader's window limit), and the same rule for history the detector's memory bound
//! forgot.
//!
//! The engine lives in these files, one concern each: `types.rs` (requests, outcomes, limits,
//! configuration and errors), `engine.rs` (the public API: `decide`, `process`, `confirm`,
//! `status`), `steps.rs` (the steps of `decide`), `recovery.rs` (`open` and the replay of the log
//! or of stored pieces), `checkpoint.rs` (the checkpoint's format).

pub mod batch;
mod checkpoint;
mod decisions;
pub mod durable;
mod engine;
mod history;
pub mod piece;
pub mod record;
mod recovery;
pub mod refusal;
mod steps;
pub mod stream;
mod types;
pub mod wire;

pub use decisions::{Decision, DecisionIndex};
pub use durable::{ConfirmError, Handout, Released};
pub use engine::CommitEngine;
pub use types::{
    fingerprint, fingerprint_in, AbortReason, Durability, EngineConfig, EngineError,
    EngineRecovery, Limits, Outcome, Request, SubmitError,
};

#[cfg(test)]
mod tests;
