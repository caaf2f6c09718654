//! A batch of *parts*: how the group-commit scheduler hands many callers' work to the engine in
//! one call, and how the answers are split back. Each part is a list of requests (answered one
//! answer per request) or one serialized `CommitStreamRequest` (answered with the serialized
//! `CommitStreamResponse` and its counts, no object per transaction; see [`super::stream`]).
//!
//! The steps, in order: [`decode_parts`] (with a [`StreamPool`], no lock needed), then
//! [`PartsEngine::decide_parts`] or [`PartsEngine::process_parts`] (the engine's one batch), then
//! [`split_answers`] per released batch. With the external durable step a batch's answers come
//! out of a later call ([`PartsEngine::confirm`], or another batch's decide): the engine keeps
//! each pending batch's layout beside it, so whichever call releases the batch can split it.

use std::collections::HashMap;

use crate::commit::stream::{StreamCounts, StreamPart, StreamPool, StreamShape};
use crate::commit::wire::WireError;
use crate::commit::{CommitEngine, ConfirmError, Handout, Released, Request};
use crate::hlc::Clock;

/// One part as given, before decoding: its requests, or the bytes of one message.
pub enum PartData<'i> {
    Requests(Vec<Request<'i>>),
    Stream(&'i [u8]),
}

/// One part, decoded.
pub enum DecodedPart<'d> {
    Requests(&'d [Request<'d>]),
    Stream(StreamPart),
    /// The message itself does not parse: the whole part is refused, nothing in it decided.
    Malformed(WireError),
}

/// How to split a batch's answers back into its parts.
#[derive(Debug, Clone)]
pub enum PartLayout {
    Requests(usize),
    Stream(StreamShape, usize),
    Malformed(String),
}

/// Decodes the parts, the messages into parts taken from `pool` (see [`recycle_parts`]).
pub fn decode_parts<'d>(data: &'d [PartData<'_>], pool: &mut StreamPool) -> Vec<DecodedPart<'d>> {
    data.iter()
        .map(|part| match part {
            PartData::Requests(requests) => DecodedPart::Requests(requests),
            PartData::Stream(bytes) => match pool.decode(bytes) {
                (stream, Ok(())) => DecodedPart::Stream(stream),
                (stream, Err(err)) => {
                    pool.recycle(stream);
                    DecodedPart::Malformed(err)
                }
            },
        })
        .collect()
}

/// Gives the decoded messages back to `pool` once the batch is decided, for the next batch to
/// refill (no allocation per transaction once warm).
pub fn recycle_parts(decoded: Vec<DecodedPart<'_>>, pool: &mut StreamPool) {
    for part in decoded {
        if let DecodedPart::Stream(stream) = part {
            pool.recycle(stream);
        }
    }
}

/// The batch's requests, in part order, and the layout to split the answers.
pub fn requests_of<'d>(decoded: &'d [DecodedPart<'_>]) -> (Vec<Request<'d>>, Vec<PartLayout>) {
    let mut requests = Vec::new();
    let mut layout = Vec::with_capacity(decoded.len());
    for part in decoded {
        match part {
            DecodedPart::Requests(part_requests) => {
                requests.extend_from_slice(part_requests);
                layout.push(PartLayout::Requests(part_requests.len()));
            }
            DecodedPart::Stream(stream) => {
                requests.extend(stream.transactions().iter().map(Request::Commit));
                layout.push(PartLayout::Stream(
                    stream.shape.clone(),
                    stream.transactions().len(),
                ));
            }
            DecodedPart::Malformed(err) => {
                layout.push(PartLayout::Malformed(format!(
                    "malformed CommitStreamRequest: {err}"
                )));
            }
        }
    }
    (requests, layout)
}

/// A part's answers: the range of the batch's answers that are its own (to be answered one by
/// one), the encoded response of a message with its counts, or why the message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswers {
    /// `(first, count)` in the released batch's `txn_ids` and `answers`.
    Requests(usize, usize),
    Stream(Vec<u8>, StreamCounts),
    Malformed(String),
}

/// Splits `released`'s answers by `layout`, encoding the message parts.
pub fn split_answers(layout: &[PartLayout], released: &Released) -> Vec<PartAnswers> {
    let mut at = 0;
    layout
        .iter()
        .map(|part| match part {
            PartLayout::Requests(count) => {
                let end = (at + count).min(released.answers.len());
                let answers = PartAnswers::Requests(at, end - at);
                at = end;
                answers
            }
            PartLayout::Stream(shape, count) => {
                let end = (at + count).min(released.answers.len());
                let (bytes, counts) =
                    shape.encode_response(&released.txn_ids[at..end], &released.answers[at..end]);
                at = end;
                PartAnswers::Stream(bytes, counts)
            }
            PartLayout::Malformed(message) => PartAnswers::Malformed(message.clone()),
        })
        .collect()
}

/// A released batch and, when it was decided by parts, the layout to split its answers.
#[derive(Debug)]
pub struct ReleasedBatch {
    pub released: Released,
    pub layout: Option<Vec<PartLayout>>,
}

impl ReleasedBatch {
    /// The answers per part (None: a batch of plain requests, one answer per request).
    pub fn split(&self) -> Option<Vec<PartAnswers>> {
        self.layout
            .as_ref()
            .map(|layout| split_answers(layout, &self.released))
    }
}

/// What a decide hands back: the pieces to make durable and the batches released now.
#[derive(Debug, Default)]
pub struct PartsHandout {
    pub ticket: u64,
    pub pieces: Vec<(u64, Vec<u8>)>,
    pub released: Vec<ReleasedBatch>,
}

/// The commit engine with the layouts of its batches decided by parts and not yet released, so
/// both live under one lock: a confirmation cannot release a batch before its layout is known.
pub struct PartsEngine {
    engine: CommitEngine,
    layouts: HashMap<u64, Vec<PartLayout>>,
}

impl PartsEngine {
    pub fn new(engine: CommitEngine) -> Self {
        Self {
            engine,
            layouts: HashMap::new(),
        }
    }

    pub fn engine(&self) -> &CommitEngine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut CommitEngine {
        &mut self.engine
    }

    /// Decides a batch of plain requests ([`CommitEngine::decide`]); the batches it releases may
    /// include earlier ones decided by parts.
    pub fn decide(&mut self, clock: &Clock, requests: &[Request<'_>]) -> PartsHandout {
        let handout = self.engine.decide(clock, requests);
        self.hand_out(handout)
    }

    /// Decides a batch of parts (see [`decode_parts`]).
    pub fn decide_parts(&mut self, clock: &Clock, decoded: &[DecodedPart<'_>]) -> PartsHandout {
        let (requests, layout) = requests_of(decoded);
        let handout = self.engine.decide(clock, &requests);
        self.layouts.insert(handout.ticket, layout);
        self.hand_out(handout)
    }

    /// Decides a batch of parts at once ([`CommitEngine::process`]: the local log or memory).
    pub fn process_parts(&mut self, clock: &Clock, decoded: &[DecodedPart<'_>]) -> ReleasedBatch {
        let (requests, layout) = requests_of(decoded);
        let answers = self.engine.process(clock, &requests);
        ReleasedBatch {
            released: Released {
                ticket: 0,
                txn_ids: requests.iter().map(Request::txn_id).collect(),
                answers,
                ..Released::default()
            },
            layout: Some(layout),
        }
    }

    /// [`CommitEngine::confirm`], each released batch with its layout.
    pub fn confirm(&mut self, batch_seq: u64) -> Result<Vec<ReleasedBatch>, ConfirmError> {
        let released = self.engine.confirm(batch_seq)?;
        Ok(self.with_layouts(released))
    }

    /// [`CommitEngine::fail`], each released batch with its layout.
    pub fn fail(&mut self, reason: &str) -> Vec<ReleasedBatch> {
        let released = self.engine.fail(reason);
        self.with_layouts(released)
    }

    /// [`CommitEngine::synced`], each released batch with its layout.
    pub fn synced(
        &mut self,
        point: &super::durable::LocalSyncPoint,
        took: std::time::Duration,
    ) -> Vec<ReleasedBatch> {
        let released = self.engine.synced(point, took);
        self.with_layouts(released)
    }

    /// [`CommitEngine::close`], each batch it answers with its layout.
    pub fn close(&mut self) -> Vec<ReleasedBatch> {
        let released = self.engine.close();
        let released = self.with_layouts(released);
        self.layouts.clear();
        released
    }

    /// Layouts of batches decided by parts and not yet released.
    pub fn pending_layouts(&self) -> usize {
        self.layouts.len()
    }

    fn hand_out(&mut self, handout: Handout) -> PartsHandout {
        PartsHandout {
            ticket: handout.ticket,
            pieces: handout.pieces,
            released: self.with_layouts(handout.released),
        }
    }

    fn with_layouts(&mut self, released: Vec<Released>) -> Vec<ReleasedBatch> {
        released
            .into_iter()
            .map(|released| ReleasedBatch {
                layout: self.layouts.remove(&released.ticket),
                released,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::commit::wire::{self, WireResult};
    use crate::commit::{Durability, EngineConfig, Outcome, SubmitError};
    use crate::conflict::Transaction;
    use crate::hlc::{ClockConfig, ManualClock, PhysicalSource};
    use crate::timestamp::Timestamp;

    fn clock() -> Clock {
        let mut config = ClockConfig::new(1, 1_000);
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        config.source = PhysicalSource::Manual(physical);
        Clock::new(config)
    }

    fn engine(clock: &Clock, durability: Durability) -> PartsEngine {
        let config = EngineConfig::new(durability, None);
        PartsEngine::new(CommitEngine::open(config, clock).unwrap().0)
    }

    fn message(txns: &[(u64, Timestamp, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(id, start, write) in txns {
            wire::encode_transaction(
                &mut out,
                id,
                start,
                std::iter::empty(),
                [write.as_bytes()].into_iter(),
            );
        }
        out
    }

    fn txn(id: u64, start: Timestamp, write: &str) -> Transaction {
        Transaction::new(id, start, std::iter::empty::<&str>(), [write].iter(), None)
    }

    #[test]
    fn parts_are_decided_as_one_batch_and_split_back_in_order() {
        let clock = clock();
        let mut engine = engine(&clock, Durability::Memory);
        let start = clock.now().unwrap();
        let first = txn(1, start, "x");
        let stream = message(&[(2, start, "x"), (3, start, "y")]);
        let data = [
            PartData::Requests(vec![Request::Commit(&first), Request::Abort(9, None)]),
            PartData::Stream(&stream),
            PartData::Stream(b"\xff"),
        ];
        let mut pool = StreamPool::default();
        let decoded = decode_parts(&data, &mut pool);
        let batch = engine.process_parts(&clock, &decoded);
        recycle_parts(decoded, &mut pool);
        assert_eq!(batch.released.txn_ids, vec![1, 9, 2, 3]);
        let split = batch.split().unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split[0], PartAnswers::Requests(0, 2));
        assert!(matches!(
            batch.released.answers[0],
            Ok(Outcome::Committed(_))
        ));
        let PartAnswers::Stream(response, counts) = &split[1] else {
            panic!("expected a stream part, got {:?}", split[1]);
        };
        // 2 loses to 1 (same batch, same key); 3 commits.
        assert_eq!(
            counts,
            &StreamCounts {
                committed: 1,
                aborted: 1,
                refused: 0,
                ceiling: false
            }
        );
        let results = wire::decode_response(response).unwrap();
        let ids: Vec<u64> = results
            .iter()
            .map(|result| match result {
                WireResult::Decided(id, _) => *id,
                WireResult::Error { txn_id, .. } => *txn_id,
            })
            .collect();
        assert_eq!(ids, vec![2, 3]);
        assert!(matches!(&split[2], PartAnswers::Malformed(m) if m.starts_with("malformed")));
    }

    #[test]
    fn an_external_batch_keeps_its_layout_until_confirmed() {
        let clock = clock();
        let mut engine = engine(&clock, Durability::External);
        let start = clock.now().unwrap();
        let stream = message(&[(1, start, "x")]);
        let data = [PartData::Stream(&stream)];
        let mut pool = StreamPool::default();
        let decoded = decode_parts(&data, &mut pool);
        let handout = engine.decide_parts(&clock, &decoded);
        assert!(handout.released.is_empty());
        assert_eq!(engine.pending_layouts(), 1);
        let (seq, _) = handout.pieces[0];
        // A plain batch decided meanwhile is released after the first, without a layout.
        let plain = engine.decide(&clock, &[Request::Abort(5, None)]);
        let released = engine.confirm(seq).unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].released.ticket, handout.ticket);
        let split = released[0].split().unwrap();
        assert!(matches!(&split[0], PartAnswers::Stream(_, c) if c.committed == 1));
        assert_eq!(engine.pending_layouts(), 0);
        let (plain_seq, _) = plain.pieces[0];
        let released = engine.confirm(plain_seq).unwrap();
        assert!(released[0].layout.is_none());
    }

    #[test]
    fn a_failed_external_batch_is_split_with_its_refusals() {
        let clock = clock();
        let mut engine = engine(&clock, Durability::External);
        let start = clock.now().unwrap();
        let stream = message(&[(1, start, "x"), (2, start, "y")]);
        let data = [PartData::Stream(&stream)];
        let decoded = decode_parts(&data, &mut StreamPool::default());
        engine.decide_parts(&clock, &decoded);
        let released = engine.fail("the store is gone");
        let split = released[0].split().unwrap();
        let PartAnswers::Stream(response, counts) = &split[0] else {
            panic!("expected a stream part");
        };
        assert_eq!(counts.refused, 2);
        let unknown = SubmitError::OutcomeUnknown(String::new());
        for result in wire::decode_response(response).unwrap() {
            assert!(
                matches!(result, WireResult::Error { code, .. } if code == unknown.refusal().code())
            );
        }
        assert_eq!(engine.pending_layouts(), 0);
    }
}
