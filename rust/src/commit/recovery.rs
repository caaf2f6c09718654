//! Recovery: [`CommitEngine::open`] replays the commit log (the decisions index, the detector's
//! history, the clock's floor, the checkpoint's low watermark); [`CommitEngine::replay_piece`]
//! replays one stored piece when a clustered leader takes over.

use crate::conflict::{ConflictDetector, FlatMap, Transaction, TxnId};
use crate::hlc::Clock;
use crate::log::CommitLog;
use crate::timestamp::Timestamp;

use super::decisions::{Decision, DecisionIndex};
use super::durable::{self, DurableStep, ExternalBatches, LocalLog};
use super::types::{AbortReason, Durability, EngineConfig, EngineError, EngineRecovery, Outcome};
use super::{checkpoint, piece, record, CommitEngine};

/// Decisions ahead whose index slots are prefetched while a piece replays (as triage does).
const REPLAY_PREFETCH_AHEAD: usize = 8;

impl CommitEngine {
    /// Opens the log (unless `Memory`), replays it, and moves `clock` past the newest commit.
    pub fn open(
        config: EngineConfig,
        clock: &Clock,
    ) -> Result<(Self, EngineRecovery), EngineError> {
        let detector = ConflictDetector::new(config.isolation, config.max_keys)
            .map_err(|err| EngineError::InvalidConfig(err.to_string()))?;
        if config.retain_segments == 0 {
            return Err(EngineError::InvalidConfig(
                "retain_segments must be at least 1, got 0".into(),
            ));
        }
        let mut engine = Self {
            detector,
            durable: DurableStep::Memory,
            durability: config.durability,
            limits: config.limits,
            decisions: DecisionIndex::new(config.retained_decisions)
                .map_err(|err| EngineError::InvalidConfig(err.to_string()))?,
            newest_commit: None,
            newest_decided: None,
            decisions_forgotten_through: None,
            next_ticket: 1,
            history: None,
            batch_ids: FlatMap::default(),
            buffer: Vec::new(),
            bounds: Vec::new(),
            committed_total: 0,
            aborted_total: 0,
            batches_total: 0,
            closed: false,
        };
        let mut recovery = EngineRecovery::default();
        if matches!(config.durability, Durability::Sync | Durability::Async) {
            let dir = config.log_dir.clone().ok_or_else(|| {
                EngineError::InvalidConfig(
                    "a log directory is required unless durability is \"memory\" or \"external\""
                        .into(),
                )
            })?;
            let mut replay_error = None;
            let (log, recovered) =
                CommitLog::open(&dir, config.log_options, &mut |seq, payload| {
                    if replay_error.is_some() {
                        return;
                    }
                    match record::decode(payload) {
                        Ok(decision) => engine.replay(decision, &mut recovery),
                        Err(err) => {
                            replay_error = Some(EngineError::BadRecord {
                                seq,
                                detail: err.to_string(),
                            });
                        }
                    }
                })?;
            if let Some(err) = replay_error {
                return Err(err);
            }
            if let Some((_, data)) = &recovered.checkpoint {
                if let Some(covered) = checkpoint::decode(data) {
                    engine.detector.raise_low_watermark(covered);
                    engine.forget_decisions_through(covered);
                    engine.newest_commit = engine.newest_commit.max(Some(covered));
                    engine.newest_decided = engine.newest_decided.max(Some(covered));
                }
            }
            engine.durable = DurableStep::Local(LocalLog::new(
                log,
                config.durability == Durability::Sync,
                config.retain_segments,
                engine.newest_decided,
            ));
            recovery.log = Some(recovered);
        }
        if config.durability == Durability::External {
            if let Some(dir) = &config.log_dir {
                return Err(EngineError::InvalidConfig(format!(
                    "durability \"external\" keeps no local log, but a log directory was given: \
                     {}",
                    dir.display()
                )));
            }
            if config.max_batch_bytes < durable::MIN_MAX_BATCH_BYTES {
                return Err(EngineError::InvalidConfig(format!(
                    "max_batch_bytes must be at least {}, got {}",
                    durable::MIN_MAX_BATCH_BYTES,
                    config.max_batch_bytes
                )));
            }
            engine.durable = DurableStep::External(ExternalBatches::new(
                config.first_batch_seq,
                config.max_batch_bytes,
            ));
        }
        if let Some(floor) = engine.newest_commit {
            clock.raise_floor(floor);
        }
        recovery.floor = engine.newest_commit;
        Ok((engine, recovery))
    }

    fn replay(&mut self, decision: record::DecisionRecord, recovery: &mut EngineRecovery) {
        // What the clock read when this record was written, as far as the log tells.
        let seen = self
            .newest_decided
            .max(self.newest_commit)
            .unwrap_or(Timestamp::from_packed(0, 0));
        match decision {
            record::DecisionRecord::Committed {
                txn_id,
                fingerprint,
                start_ts,
                commit_ts,
                writes,
            } => {
                if !writes.is_empty() {
                    // (A compact piece carries no write set: see `piece.rs`.)
                    let txn =
                        Transaction::new(txn_id, start_ts, Vec::<Vec<u8>>::new(), writes, None);
                    // A commit older than a key's remembered one changes nothing; a logged
                    // commit is always after its start, so recording cannot fail on a sound log.
                    let _ = self.detector.record(&txn, commit_ts);
                }
                self.remember_replayed(
                    txn_id,
                    Decision {
                        outcome: Outcome::Committed(commit_ts),
                        fingerprint: Some(fingerprint),
                        decided_at: commit_ts,
                    },
                    seen.max(commit_ts),
                );
                self.newest_commit = self.newest_commit.max(Some(commit_ts));
                recovery.commits += 1;
            }
            record::DecisionRecord::Aborted {
                fingerprint,
                start_ts,
                conflict,
            } => {
                self.remember_replayed(
                    conflict.txn_id,
                    Decision {
                        outcome: Outcome::Aborted(AbortReason::Conflict(conflict)),
                        fingerprint: Some(fingerprint),
                        decided_at: start_ts,
                    },
                    seen.max(start_ts),
                );
                recovery.aborts += 1;
            }
            record::DecisionRecord::AbortRequested { txn_id, decided_at } => {
                self.remember_replayed(
                    txn_id,
                    Decision {
                        outcome: Outcome::Aborted(AbortReason::Requested),
                        fingerprint: None,
                        decided_at,
                    },
                    seen,
                );
                recovery.aborts += 1;
            }
        }
    }

    /// Recovery on promotion (durability `External`): replays the decisions of one stored piece
    /// (in the order the pieces were handed out; while a history loads, newest first: see
    /// `history.rs`), and moves `clock` past its newest commit. A piece that does not decode is
    /// an error naming `batch_seq`, never skipped.
    pub fn replay_piece(
        &mut self,
        clock: &Clock,
        batch_seq: u64,
        piece: &[u8],
    ) -> Result<EngineRecovery, EngineError> {
        let bad = |err: record::RecordError| EngineError::BadRecord {
            seq: batch_seq,
            detail: format!("decision batch: {err}"),
        };
        let mut decisions = piece::decode(piece).map_err(bad)?;
        let reading = piece::reading(piece).map_err(bad)?;
        if self.history.is_some() {
            decisions.reverse(); // newest first, each in front of those replayed before
        }
        let mut recovery = EngineRecovery::default();
        // Each replay looks its id up in the decisions index first, a cache miss in a large
        // index (most of the replay's time): the slots of the ids a few ahead load meanwhile.
        let ids: Vec<TxnId> = decisions
            .iter()
            .map(record::DecisionRecord::txn_id)
            .collect();
        for &id in ids.iter().take(REPLAY_PREFETCH_AHEAD) {
            self.decisions.prefetch(id);
        }
        for (i, decision) in decisions.into_iter().enumerate() {
            if let Some(&ahead) = ids.get(i + REPLAY_PREFETCH_AHEAD) {
                self.decisions.prefetch(ahead);
            }
            self.replay(decision, &mut recovery);
        }
        self.history_piece_loaded(reading);
        if let Some(floor) = self.newest_commit {
            clock.raise_floor(floor);
        }
        recovery.floor = self.newest_commit;
        Ok(recovery)
    }
}
