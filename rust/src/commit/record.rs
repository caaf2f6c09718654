//! The payload of one commit-log record: one decision (format version 1, little-endian). Its
//! layout is described with the log's own format, in one place: the documentation site's "Commit
//! log format" page, "Record payloads" (`docs/commit-log.md` in the repository).
//!
//! A committed record carries the write set so that recovery can rebuild the conflict detector's
//! history; the fingerprint lets a resubmission after a restart be told apart from a different
//! transaction reusing the id.

use std::fmt;

use crate::conflict::{Conflict, ConflictKind, LostTo, TxnId};
use crate::timestamp::Timestamp;

const VERSION: u8 = 1;
const KIND_COMMITTED: u8 = 1;
const KIND_CONFLICT: u8 = 2;
const KIND_REQUESTED: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionRecord {
    Committed {
        txn_id: TxnId,
        fingerprint: u64,
        start_ts: Timestamp,
        commit_ts: Timestamp,
        writes: Vec<Vec<u8>>,
    },
    Aborted {
        fingerprint: u64,
        start_ts: Timestamp,
        conflict: Conflict,
    },
    AbortRequested {
        txn_id: TxnId,
        decided_at: Timestamp,
    },
}

impl DecisionRecord {
    /// The transaction the record decides.
    pub fn txn_id(&self) -> TxnId {
        match self {
            Self::Committed { txn_id, .. } | Self::AbortRequested { txn_id, .. } => *txn_id,
            Self::Aborted { conflict, .. } => conflict.txn_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub &'static str);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecodable decision record: {}", self.0)
    }
}

fn put_ts(out: &mut Vec<u8>, ts: Timestamp) {
    out.extend_from_slice(&ts.packed().to_le_bytes());
    out.extend_from_slice(&ts.node().to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a committed decision to `out`.
pub fn encode_committed<'k>(
    out: &mut Vec<u8>,
    txn_id: TxnId,
    fingerprint: u64,
    start_ts: Timestamp,
    commit_ts: Timestamp,
    writes: impl ExactSizeIterator<Item = &'k [u8]>,
) {
    out.extend_from_slice(&[VERSION, KIND_COMMITTED]);
    out.extend_from_slice(&txn_id.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    put_ts(out, start_ts);
    put_ts(out, commit_ts);
    out.extend_from_slice(
        &u32::try_from(writes.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for key in writes {
        put_bytes(out, key);
    }
}

pub fn encode_aborted(
    out: &mut Vec<u8>,
    fingerprint: u64,
    start_ts: Timestamp,
    conflict: &Conflict,
) {
    out.extend_from_slice(&[VERSION, KIND_CONFLICT]);
    out.extend_from_slice(&conflict.txn_id.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    put_ts(out, start_ts);
    out.push(conflict_kind_code(conflict.kind));
    match conflict.lost_to {
        LostTo::Commit(ts) => {
            out.push(1);
            put_ts(out, ts);
        }
        LostTo::BatchMember(id) => {
            out.push(2);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        LostTo::LowWatermark(ts) => {
            out.push(3);
            put_ts(out, ts);
        }
    }
    match &conflict.key {
        Some(key) => {
            out.push(1);
            put_bytes(out, key);
        }
        None => out.push(0),
    }
}

pub fn encode_abort_requested(out: &mut Vec<u8>, txn_id: TxnId, decided_at: Timestamp) {
    out.extend_from_slice(&[VERSION, KIND_REQUESTED]);
    out.extend_from_slice(&txn_id.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    put_ts(out, decided_at);
}

/// The byte a stored decision (a record here, a compact piece in `piece.rs`) writes for a
/// conflict's kind: fixed numbers, since stored bytes outlive any reordering of the enum.
pub(super) fn conflict_kind_code(kind: ConflictKind) -> u8 {
    match kind {
        ConflictKind::WriteWrite => 1,
        ConflictKind::ReadWrite => 2,
        ConflictKind::TooOld => 3,
    }
}

/// The kind that [`conflict_kind_code`] wrote as `code`.
pub(super) fn conflict_kind_of_code(code: u8) -> Result<ConflictKind, RecordError> {
    match code {
        1 => Ok(ConflictKind::WriteWrite),
        2 => Ok(ConflictKind::ReadWrite),
        3 => Ok(ConflictKind::TooOld),
        _ => Err(RecordError("unknown conflict kind")),
    }
}

/// Reads stored decisions front to back; every read past the end is a `truncated` error.
pub(super) struct ByteReader<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> ByteReader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }

    pub(super) fn u64(&mut self) -> Result<u64, RecordError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    pub(super) fn varint(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError("varint longer than 10 bytes"))
    }

    fn ts(&mut self) -> Result<Timestamp, RecordError> {
        let packed = self.u64()?;
        Ok(Timestamp::from_packed(packed, self.u16()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

pub fn decode(bytes: &[u8]) -> Result<DecisionRecord, RecordError> {
    let mut r = ByteReader { bytes };
    if r.u8()? != VERSION {
        return Err(RecordError("unknown record version"));
    }
    let kind = r.u8()?;
    let txn_id = r.u64()?;
    let fingerprint = r.u64()?;
    let record = match kind {
        KIND_COMMITTED => {
            let start_ts = r.ts()?;
            let commit_ts = r.ts()?;
            let count = r.u32()? as usize;
            // Each key takes at least its 4-byte length: a count past that is damage.
            if count > r.bytes.len() / 4 {
                return Err(RecordError("write count larger than the record"));
            }
            let writes = (0..count).map(|_| r.bytes()).collect::<Result<_, _>>()?;
            DecisionRecord::Committed {
                txn_id,
                fingerprint,
                start_ts,
                commit_ts,
                writes,
            }
        }
        KIND_CONFLICT => {
            let start_ts = r.ts()?;
            let kind = conflict_kind_of_code(r.u8()?)?;
            let lost_to = match r.u8()? {
                1 => LostTo::Commit(r.ts()?),
                2 => {
                    let id = r.u64()?;
                    r.u16()?;
                    LostTo::BatchMember(id)
                }
                3 => LostTo::LowWatermark(r.ts()?),
                _ => return Err(RecordError("unknown lost-to tag")),
            };
            let key = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?),
                _ => return Err(RecordError("bad key flag")),
            };
            DecisionRecord::Aborted {
                fingerprint,
                start_ts,
                conflict: Conflict {
                    txn_id,
                    kind,
                    key,
                    lost_to,
                },
            }
        }
        KIND_REQUESTED => DecisionRecord::AbortRequested {
            txn_id,
            decided_at: r.ts()?,
        },
        _ => return Err(RecordError("unknown decision kind")),
    };
    if !r.bytes.is_empty() {
        return Err(RecordError("trailing bytes"));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical: u64, logical: u64, node: u64) -> Timestamp {
        Timestamp::new(physical, logical, node).unwrap()
    }

    #[test]
    fn every_kind_round_trips() {
        let mut out = Vec::new();
        let keys: [&[u8]; 3] = [b"a", b"", b"longer key"];
        encode_committed(
            &mut out,
            7,
            99,
            ts(10, 1, 2),
            ts(11, 0, 2),
            keys.iter().copied(),
        );
        assert_eq!(
            decode(&out).unwrap(),
            DecisionRecord::Committed {
                txn_id: 7,
                fingerprint: 99,
                start_ts: ts(10, 1, 2),
                commit_ts: ts(11, 0, 2),
                writes: vec![b"a".to_vec(), vec![], b"longer key".to_vec()],
            }
        );
        for lost_to in [
            LostTo::Commit(ts(5, 5, 5)),
            LostTo::BatchMember(u64::MAX),
            LostTo::LowWatermark(ts(1, 0, 0)),
        ] {
            for key in [None, Some(b"k".to_vec())] {
                let conflict = Conflict {
                    txn_id: 3,
                    kind: ConflictKind::ReadWrite,
                    key,
                    lost_to,
                };
                let mut out = Vec::new();
                encode_aborted(&mut out, 1234, ts(4, 0, 1), &conflict);
                assert_eq!(
                    decode(&out).unwrap(),
                    DecisionRecord::Aborted {
                        fingerprint: 1234,
                        start_ts: ts(4, 0, 1),
                        conflict
                    }
                );
            }
        }
        let mut out = Vec::new();
        encode_abort_requested(&mut out, 42, ts(9, 9, 9));
        assert_eq!(
            decode(&out).unwrap(),
            DecisionRecord::AbortRequested {
                txn_id: 42,
                decided_at: ts(9, 9, 9)
            }
        );
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut out = Vec::new();
        encode_committed(
            &mut out,
            7,
            99,
            ts(10, 1, 2),
            ts(11, 0, 2),
            [&b"key"[..]].into_iter(),
        );
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = out.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        let mut bad = out.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
        let mut bad = out;
        bad[1] = 9;
        assert!(decode(&bad).is_err());
    }
}
