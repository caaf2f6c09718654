//! One `CommitStreamRequest` as a part of a group-commit batch: bytes in, bytes out.
//!
//! The server hands the serialized message to the scheduler untouched; here it is decoded
//! straight into the engine's transactions, decided with the rest of the batch (the same
//! validation, idempotency, fencing and durable step as any other request), and the answers are
//! encoded as the serialized `CommitStreamResponse`, with no Python object per transaction. A
//! transaction that cannot be built (no or a malformed `start_ts`) gets its own error result in
//! its place; the others are decided. The gRPC status code of each refusal comes from
//! [`super::refusal`], the table the server's `ERROR_CODES` reads too.
//!
//! No allocation per transaction once warm: a decoded message keeps its transactions (and their
//! key buffers) when it is done, and a [`StreamPool`] hands it to a later message, which refills
//! them in place, where they are (no transaction is moved); the committed answers are encoded
//! into one buffer per message.

use crate::commit::refusal::Refusal;
use crate::commit::wire::{self, encode_committed_result, WireError, WireResult};
use crate::commit::{Outcome, SubmitError};
use crate::conflict::{KeySet, Transaction};
use crate::timestamp::Timestamp;

/// A decoded message: its well-formed transactions (for the engine) and its shape.
#[derive(Default)]
pub struct StreamPart {
    /// The transactions, the first `decoded` of them this message's; the rest are an earlier
    /// message's, whose buffers the next decode refills in place (nothing moves).
    slots: Vec<Transaction>,
    decoded: usize,
    pub shape: StreamShape,
}

/// Where the malformed transactions of a message sit among the well-formed ones.
#[derive(Debug, Clone, Default)]
pub struct StreamShape {
    total: usize,
    /// `(position in the message, txn_id, message)`, in position order.
    malformed: Vec<(usize, u64, String)>,
}

/// What a response holds, for the server's metrics (counted per message) and the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StreamCounts {
    pub committed: u64,
    pub aborted: u64,
    pub refused: u64,
    /// Some transaction was refused at the clock's ceiling (the scheduler raises it and retries).
    pub ceiling: bool,
}

fn empty_transaction() -> Transaction {
    Transaction {
        id: 0,
        start_ts: Timestamp::from_packed(0, 0),
        reads: KeySet::default(),
        writes: KeySet::default(),
        clock: None,
    }
}

impl StreamPart {
    /// Decodes a serialized `CommitStreamRequest`; an error when the message itself is malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut part = Self::default();
        part.decode_into(bytes)?;
        Ok(part)
    }

    /// The message's well-formed transactions, in message order.
    pub fn transactions(&self) -> &[Transaction] {
        &self.slots[..self.decoded]
    }

    /// Decodes `bytes` in place of what this part held, reusing its transactions' buffers.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.decoded = 0;
        self.shape.total = 0;
        self.shape.malformed.clear();
        let Self {
            slots,
            decoded,
            shape,
        } = self;
        wire::for_each_request_transaction(bytes, |txn_bytes| {
            if *decoded == slots.len() {
                slots.push(empty_transaction());
            }
            let txn = &mut slots[*decoded];
            // A malformed transaction leaves its slot to the next one.
            match wire::decode_engine_transaction(txn_bytes, txn)? {
                None => *decoded += 1,
                Some((txn_id, message)) => shape.malformed.push((shape.total, txn_id, message)),
            }
            shape.total += 1;
            Ok(())
        })
        .inspect_err(|_| self.decoded = 0)
    }
}

/// Decoded messages kept for later ones (see the module's note on allocation).
#[derive(Default)]
pub struct StreamPool {
    parts: Vec<StreamPart>,
}

/// Decoded messages a pool keeps at most.
const POOL_PARTS: usize = 64;

impl StreamPool {
    /// Decodes `bytes` into a part taken from the pool (or a new one).
    pub fn decode(&mut self, bytes: &[u8]) -> (StreamPart, Result<(), WireError>) {
        let mut part = self.parts.pop().unwrap_or_default();
        let decoded = part.decode_into(bytes);
        (part, decoded)
    }

    /// Takes `other`'s parts (up to the pool's bound).
    pub fn absorb(&mut self, other: StreamPool) {
        for part in other.parts {
            self.recycle(part);
        }
    }

    /// Gives a part back once its message is answered.
    pub fn recycle(&mut self, part: StreamPart) {
        if self.parts.len() < POOL_PARTS {
            self.parts.push(part);
        }
    }
}

impl StreamShape {
    /// The serialized `CommitStreamResponse`: `answers` are those of the well-formed
    /// transactions (ids `txn_ids`), in message order.
    pub fn encode_response(
        &self,
        txn_ids: &[u64],
        answers: &[Result<Outcome, SubmitError>],
    ) -> (Vec<u8>, StreamCounts) {
        let mut out = Vec::with_capacity(self.total * 24);
        let mut counts = StreamCounts::default();
        let mut decided = txn_ids.iter().zip(answers);
        let mut malformed = self.malformed.iter().peekable();
        for position in 0..self.total {
            if let Some((_, txn_id, message)) = malformed.next_if(|(at, _, _)| *at == position) {
                counts.refused += 1;
                wire::encode_result(
                    &mut out,
                    &WireResult::Error {
                        txn_id: *txn_id,
                        code: Refusal::InvalidTransaction.code(),
                        message: message.clone(),
                    },
                );
                continue;
            }
            let Some((&txn_id, answer)) = decided.next() else {
                break; // fewer answers than transactions: cannot happen, the engine answers all
            };
            match answer {
                Ok(Outcome::Committed(ts)) => {
                    counts.committed += 1;
                    encode_committed_result(&mut out, txn_id, *ts);
                }
                Ok(outcome) => {
                    counts.aborted += 1;
                    wire::encode_result(&mut out, &WireResult::Decided(txn_id, outcome.clone()));
                }
                Err(err) => {
                    counts.refused += 1;
                    let refusal = err.refusal();
                    counts.ceiling |= refusal == Refusal::CeilingReached;
                    wire::encode_result(
                        &mut out,
                        &WireResult::Error {
                            txn_id,
                            code: refusal.code(),
                            message: err.to_string(),
                        },
                    );
                }
            }
        }
        (out, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::AbortReason;
    use crate::hlc::ClockError;
    use crate::timestamp::Timestamp;

    fn ts(physical: u64) -> Timestamp {
        Timestamp::new(physical, 3, 7).unwrap()
    }

    #[test]
    fn malformed_transactions_keep_their_place_and_the_rest_is_answered() {
        let mut message = Vec::new();
        wire::encode_transaction(
            &mut message,
            1,
            ts(10),
            [&b"r"[..]].into_iter(),
            [&b"w"[..]].into_iter(),
        );
        // Transaction 2 without start_ts: field 1 (txn_id) only.
        message.extend_from_slice(&[0x0a, 0x02, 0x08, 0x02]);
        wire::encode_transaction(
            &mut message,
            3,
            ts(11),
            std::iter::empty(),
            [&b"x"[..]].into_iter(),
        );
        assert_eq!(wire::count_request_transactions(&message).unwrap(), 3);
        let part = StreamPart::decode(&message).unwrap();
        assert_eq!(part.transactions().len(), 2);
        assert_eq!(part.transactions()[0].reads.get(0), Some(&b"r"[..]));
        let answers = vec![
            Ok(Outcome::Committed(ts(20))),
            Err(SubmitError::Clock(ClockError::CeilingReached {
                needed_physical: 30,
                ceiling_physical: 29,
            })),
        ];
        let (response, counts) = part.shape.encode_response(&[1, 3], &answers);
        assert_eq!(
            counts,
            StreamCounts {
                committed: 1,
                aborted: 0,
                refused: 2,
                ceiling: true
            }
        );
        let results = wire::decode_response(&response).unwrap();
        assert_eq!(
            results[0],
            WireResult::Decided(1, Outcome::Committed(ts(20)))
        );
        assert!(matches!(
            &results[1],
            WireResult::Error { txn_id: 2, code: crate::commit::refusal::code::INVALID_ARGUMENT, message } if message.contains("start_ts is required")
        ));
        assert!(matches!(
            &results[2],
            WireResult::Error {
                txn_id: 3,
                code: crate::commit::refusal::code::UNAVAILABLE,
                ..
            }
        ));
    }

    #[test]
    fn the_fast_committed_encoding_matches_the_general_one() {
        for (txn_id, stamp) in [
            (1, Timestamp::new(0, 0, 0).unwrap()),
            (u64::MAX, Timestamp::new(1 << 50, 4095, 65535).unwrap()),
            (300, Timestamp::new(1_796_000_000_000_000, 0, 1).unwrap()),
        ] {
            let mut fast = Vec::new();
            encode_committed_result(&mut fast, txn_id, stamp);
            let mut general = Vec::new();
            wire::encode_result(
                &mut general,
                &WireResult::Decided(txn_id, Outcome::Committed(stamp)),
            );
            assert_eq!(fast, general);
        }
        let mut out = Vec::new();
        wire::encode_result(
            &mut out,
            &WireResult::Decided(4, Outcome::Aborted(AbortReason::Requested)),
        );
        assert!(!out.is_empty());
    }
}
