//! The piece format: how a clustered leader's decisions are stored in one etcd value.
//!
//! A piece starts with its format version; a node reads every version a release before it
//! wrote (a rolling upgrade), and writes the newest.
//!
//! Version 1 (written before the compact format): `1 u8 | per record: len u32 LE | record`,
//! records as in the commit log ([`super::record`]), every commit with its write set.
//!
//! Version 2 (compact), about 14 bytes per commit where version 1 took 40 plus the keys:
//! ```text
//! 2 u8 | count varint | count records
//! record = kind u8 | txn_id: zigzag varint of (id - previous record's id, wrapping)
//!   kind 1 committed:  fingerprint u64 LE | start ts' | commit ts'
//!   kind 2 conflict:   fingerprint u64 LE | start ts' | conflict kind u8 (1 write-write,
//!                      2 read-write, 3 too old) | lost-to tag u8 (1 commit, 2 batch member,
//!                      3 low watermark) | lost-to value (ts', or a txn id varint) |
//!                      key: varint (0: none, n: n - 1 bytes follow) | key bytes
//!   kind 3 requested:  decided_at ts'
//! ts' = zigzag varint of (packed - previous packed of its lane, wrapping) | node varint; three
//!       lanes, each starting at 0 in every piece: start timestamps; commit timestamps (a
//!       commit's, and a conflict's lost-to commit); the rest (decided_at, low watermarks)
//! varint = LEB128, at most 10 bytes for a u64
//! ```
//! Version 2 leaves out a commit's write set. A new leader needs none: its conflict detector's
//! low watermark is the previous leader's window limit, at or above every stored commit's
//! timestamp (no leader hands out a timestamp above its saved window), so every transaction it
//! checks either started at or below the watermark (aborted as too old, or answered from the
//! decisions index) or started after every stored commit (no stored write can conflict with it).
//! What a piece must keep is what `status` and an idempotent resubmission answer: the id, the
//! outcome with its conflict, and the fingerprint that tells a resubmission from another
//! transaction reusing the id.
//!
//! Version 3 (written since a new leader loads the history newest-first) is version 2 with the
//! leader's clock reading at encode time in its header:
//! ```text
//! 3 u8 | reading: packed u64 LE | reading's node u16 LE | count varint | count records (as v2)
//! ```
//! The reading is the clock's `last` once the batch is decided, so it is at or above every start
//! and commit timestamp in the piece (the engine moves its clock past the start of every
//! transaction it decides, aborted ones too). A requested abort's `decided_at` (its fence, up to
//! the max offset past the clock) may lie above it: an abort by id names no start timestamp, and
//! a new leader reads those ids before it serves. Readings never decrease in key order: one
//! leader decides its batches in seq order on a monotone clock, and each leader's clock starts
//! above the window of every earlier one, while no leader's clock passes its own window.
//! [`reading`] reads the header alone (`None` for versions 1 and 2, which carry no reading).

use crate::commit::record::{self, ByteReader, DecisionRecord, RecordError};
use crate::conflict::{Conflict, LostTo, TxnId};
use crate::timestamp::Timestamp;

pub const VERSION_1: u8 = 1;
pub const VERSION_2: u8 = 2;
pub const VERSION_3: u8 = 3;

const KIND_COMMITTED: u8 = 1;
const KIND_CONFLICT: u8 = 2;
const KIND_REQUESTED: u8 = 3;
/// The count at the head of a piece, patched in when it closes: 5 bytes hold any u32.
const COUNT_BYTES: usize = 5;
/// A version-3 piece's reading: packed u64 LE and node u16 LE.
const READING_BYTES: usize = 10;
/// Where the count starts in a version-3 piece.
const COUNT_AT: usize = 1 + READING_BYTES;
/// Timestamp lanes: deltas are taken against the previous timestamp of the same lane.
const START: usize = 0;
const COMMIT: usize = 1;
const OTHER: usize = 2;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(delta: u64) -> u64 {
    let signed = delta as i64;
    ((signed << 1) ^ (signed >> 63)) as u64
}

fn unzigzag(value: u64) -> u64 {
    ((value >> 1) as i64 ^ -((value & 1) as i64)) as u64
}

/// Writes version-3 pieces of at most `max_bytes` each (a record larger than that goes alone),
/// each headed by `reading` (see the module documentation).
pub struct PieceEncoder {
    max_bytes: usize,
    reading: Timestamp,
    pieces: Vec<Vec<u8>>,
    current: Vec<u8>,
    count: u32,
    previous_id: TxnId,
    previous_packed: [u64; 3],
    record: Vec<u8>,
}

impl PieceEncoder {
    pub fn new(max_bytes: usize, reading: Timestamp) -> Self {
        Self {
            max_bytes,
            reading,
            pieces: Vec::new(),
            current: Vec::new(),
            count: 0,
            previous_id: 0,
            previous_packed: [0; 3],
            record: Vec::new(),
        }
    }

    fn begin(&mut self, kind: u8, txn_id: TxnId) {
        self.record.clear();
        self.record.push(kind);
        put_varint(
            &mut self.record,
            zigzag(txn_id.wrapping_sub(self.previous_id)),
        );
        self.previous_id = txn_id;
    }

    fn ts(&mut self, lane: usize, ts: Timestamp) {
        let packed = ts.packed();
        let delta = packed.wrapping_sub(self.previous_packed[lane]);
        put_varint(&mut self.record, zigzag(delta));
        put_varint(&mut self.record, u64::from(ts.node()));
        self.previous_packed[lane] = packed;
    }

    /// Ends the record in `self.record`: into the current piece, or a new one when it would pass
    /// the cap. Deltas run on across pieces of one encoder, so a record is encoded against the
    /// piece it lands in: a new piece restarts them and the record is encoded again.
    fn finish(&mut self, encode: impl Fn(&mut Self)) {
        if self.count > 0 && self.current.len() + self.record.len() > self.max_bytes {
            self.close();
            encode(self);
        }
        if self.current.is_empty() {
            self.current.push(VERSION_3);
            self.current
                .extend_from_slice(&self.reading.packed().to_le_bytes());
            self.current
                .extend_from_slice(&self.reading.node().to_le_bytes());
            self.current.extend_from_slice(&[0; COUNT_BYTES]);
        }
        self.current.extend_from_slice(&self.record);
        self.count += 1;
    }

    fn close(&mut self) {
        if self.count == 0 {
            return;
        }
        let mut count = Vec::with_capacity(COUNT_BYTES);
        put_varint(&mut count, u64::from(self.count));
        // A varint padded to COUNT_BYTES: continuation bits on every byte but the last.
        let mut padded = [0x80u8; COUNT_BYTES];
        padded[COUNT_BYTES - 1] = 0;
        for (i, byte) in count.iter().enumerate() {
            padded[i] |= byte & 0x7f;
        }
        self.current[COUNT_AT..COUNT_AT + COUNT_BYTES].copy_from_slice(&padded);
        self.pieces.push(std::mem::take(&mut self.current));
        self.count = 0;
        self.previous_id = 0;
        self.previous_packed = [0; 3];
    }

    pub fn committed(
        &mut self,
        txn_id: TxnId,
        fingerprint: u64,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) {
        let encode = move |this: &mut Self| {
            this.begin(KIND_COMMITTED, txn_id);
            this.record.extend_from_slice(&fingerprint.to_le_bytes());
            this.ts(START, start_ts);
            this.ts(COMMIT, commit_ts);
        };
        encode(self);
        self.finish(encode);
    }

    pub fn aborted(&mut self, fingerprint: u64, start_ts: Timestamp, conflict: &Conflict) {
        let encode = |this: &mut Self| {
            this.begin(KIND_CONFLICT, conflict.txn_id);
            this.record.extend_from_slice(&fingerprint.to_le_bytes());
            this.ts(START, start_ts);
            this.record.push(record::conflict_kind_code(conflict.kind));
            match conflict.lost_to {
                LostTo::Commit(ts) => {
                    this.record.push(1);
                    this.ts(COMMIT, ts);
                }
                LostTo::BatchMember(id) => {
                    this.record.push(2);
                    put_varint(&mut this.record, id);
                }
                LostTo::LowWatermark(ts) => {
                    this.record.push(3);
                    this.ts(OTHER, ts);
                }
            }
            match &conflict.key {
                Some(key) => {
                    put_varint(&mut this.record, key.len() as u64 + 1);
                    this.record.extend_from_slice(key);
                }
                None => put_varint(&mut this.record, 0),
            }
        };
        encode(self);
        self.finish(encode);
    }

    pub fn abort_requested(&mut self, txn_id: TxnId, decided_at: Timestamp) {
        let encode = move |this: &mut Self| {
            this.begin(KIND_REQUESTED, txn_id);
            this.ts(OTHER, decided_at);
        };
        encode(self);
        self.finish(encode);
    }

    /// The pieces, in order.
    pub fn into_pieces(mut self) -> Vec<Vec<u8>> {
        self.close();
        self.pieces
    }
}

struct Reader<'a> {
    bytes: ByteReader<'a>,
    previous_id: TxnId,
    previous_packed: [u64; 3],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        self.bytes.take(n)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        self.bytes.u8()
    }

    fn u64_le(&mut self) -> Result<u64, RecordError> {
        self.bytes.u64()
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        self.bytes.varint()
    }

    fn txn_id(&mut self) -> Result<TxnId, RecordError> {
        let id = self.previous_id.wrapping_add(unzigzag(self.varint()?));
        self.previous_id = id;
        Ok(id)
    }

    fn ts(&mut self, lane: usize) -> Result<Timestamp, RecordError> {
        let packed = self.previous_packed[lane].wrapping_add(unzigzag(self.varint()?));
        let node = u16::try_from(self.varint()?).map_err(|_| RecordError("node id past u16"))?;
        self.previous_packed[lane] = packed;
        Ok(Timestamp::from_packed(packed, node))
    }

    fn record(&mut self) -> Result<DecisionRecord, RecordError> {
        let kind = self.u8()?;
        let txn_id = self.txn_id()?;
        Ok(match kind {
            KIND_COMMITTED => DecisionRecord::Committed {
                txn_id,
                fingerprint: self.u64_le()?,
                start_ts: self.ts(START)?,
                commit_ts: self.ts(COMMIT)?,
                writes: Vec::new(),
            },
            KIND_CONFLICT => {
                let fingerprint = self.u64_le()?;
                let start_ts = self.ts(START)?;
                let kind = record::conflict_kind_of_code(self.u8()?)?;
                let lost_to = match self.u8()? {
                    1 => LostTo::Commit(self.ts(COMMIT)?),
                    2 => LostTo::BatchMember(self.varint()?),
                    3 => LostTo::LowWatermark(self.ts(OTHER)?),
                    _ => return Err(RecordError("unknown lost-to tag")),
                };
                let key = match self.varint()? {
                    0 => None,
                    n => {
                        let len = usize::try_from(n - 1)
                            .map_err(|_| RecordError("key longer than the piece"))?;
                        Some(self.take(len)?.to_vec())
                    }
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
                decided_at: self.ts(OTHER)?,
            },
            _ => return Err(RecordError("unknown decision kind")),
        })
    }
}

/// The decisions of one piece, in order, whatever version wrote it.
pub fn decode(piece: &[u8]) -> Result<Vec<DecisionRecord>, RecordError> {
    match piece.first() {
        Some(&VERSION_1) => decode_v1_records(piece)?
            .into_iter()
            .map(record::decode)
            .collect(),
        Some(&VERSION_2) => decode_compact(&piece[1..]),
        Some(&VERSION_3) => {
            reading(piece)?;
            decode_compact(&piece[COUNT_AT..])
        }
        Some(_) => Err(RecordError("unknown decision piece version")),
        None => Err(RecordError("empty decision piece")),
    }
}

/// The clock reading a version-3 piece records (at or above every start and commit timestamp
/// in it); `None` for a piece of version 1 or 2. Reads the header only.
pub fn reading(piece: &[u8]) -> Result<Option<Timestamp>, RecordError> {
    match piece.first() {
        Some(&VERSION_1 | &VERSION_2) => Ok(None),
        Some(&VERSION_3) => {
            let header = piece
                .get(1..COUNT_AT)
                .ok_or(RecordError("truncated piece header"))?;
            let mut packed = [0u8; 8];
            packed.copy_from_slice(&header[..8]);
            let node = u16::from_le_bytes([header[8], header[9]]);
            Ok(Some(Timestamp::from_packed(
                u64::from_le_bytes(packed),
                node,
            )))
        }
        Some(_) => Err(RecordError("unknown decision piece version")),
        None => Err(RecordError("empty decision piece")),
    }
}

/// `piece` (version 3) as the release before wrote it: version 2, without the reading.
#[cfg(test)]
pub fn to_version_2(piece: &[u8]) -> Vec<u8> {
    let mut v2 = vec![VERSION_2];
    v2.extend_from_slice(&piece[COUNT_AT..]);
    v2
}

/// The records of a version-2 or -3 piece after its header: count varint, then the records.
fn decode_compact(bytes: &[u8]) -> Result<Vec<DecisionRecord>, RecordError> {
    let mut reader = Reader {
        bytes: ByteReader { bytes },
        previous_id: 0,
        previous_packed: [0; 3],
    };
    let count = reader.varint()?;
    // Every record takes at least 4 bytes (kind, id, a timestamp's two varints).
    if count > reader.bytes.bytes.len() as u64 / 4 {
        return Err(RecordError("record count larger than the piece"));
    }
    let records = (0..count)
        .map(|_| reader.record())
        .collect::<Result<Vec<_>, _>>()?;
    if !reader.bytes.bytes.is_empty() {
        return Err(RecordError("trailing bytes after the piece's records"));
    }
    Ok(records)
}

/// The records of one version-1 piece, in order.
fn decode_v1_records(piece: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    let Some((&version, mut rest)) = piece.split_first() else {
        return Err(RecordError("empty decision batch"));
    };
    if version != VERSION_1 {
        return Err(RecordError("unknown decision batch version"));
    }
    let mut records = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RecordError("truncated record length in decision batch"));
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > tail.len() {
            return Err(RecordError("record longer than the decision batch"));
        }
        let (record, tail) = tail.split_at(len);
        records.push(record);
        rest = tail;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::ConflictKind;

    #[test]
    fn damaged_version_1_pieces_are_errors() {
        assert!(decode_v1_records(&[]).is_err());
        assert!(decode_v1_records(&[9]).is_err());
        assert!(decode_v1_records(&[1, 3, 0]).is_err());
        assert!(decode_v1_records(&[1, 3, 0, 0, 0, 1]).is_err());
        assert_eq!(decode_v1_records(&[1]).unwrap(), Vec::<&[u8]>::new());
    }

    fn ts(physical: u64, logical: u64, node: u64) -> Timestamp {
        Timestamp::new(physical, logical, node).unwrap()
    }

    fn every_kind(encoder: &mut PieceEncoder) -> Vec<DecisionRecord> {
        let mut expected = Vec::new();
        for (i, id) in [5u64, 6, 4, u64::MAX, 1].into_iter().enumerate() {
            let start = ts(1_765_000_000_000_000 + i as u64, 3, 2);
            let commit = ts(1_765_000_000_000_100, i as u64, 65_535);
            encoder.committed(id, 0xdead_beef ^ id, start, commit);
            expected.push(DecisionRecord::Committed {
                txn_id: id,
                fingerprint: 0xdead_beef ^ id,
                start_ts: start,
                commit_ts: commit,
                writes: Vec::new(),
            });
        }
        for lost_to in [
            LostTo::Commit(ts(5, 5, 5)),
            LostTo::BatchMember(u64::MAX),
            LostTo::LowWatermark(ts(1, 0, 0)),
        ] {
            for key in [None, Some(Vec::new()), Some(b"k".to_vec())] {
                let conflict = Conflict {
                    txn_id: 3,
                    kind: ConflictKind::ReadWrite,
                    key,
                    lost_to,
                };
                encoder.aborted(1234, ts(4, 0, 1), &conflict);
                expected.push(DecisionRecord::Aborted {
                    fingerprint: 1234,
                    start_ts: ts(4, 0, 1),
                    conflict,
                });
            }
        }
        encoder.abort_requested(42, ts(9, 9, 9));
        expected.push(DecisionRecord::AbortRequested {
            txn_id: 42,
            decided_at: ts(9, 9, 9),
        });
        expected
    }

    /// The clock reading the tests' encoders record.
    fn reading_at() -> Timestamp {
        ts(1_765_000_000_000_200, 7, 65_535)
    }

    #[test]
    fn every_kind_round_trips_in_one_piece_and_split() {
        for max_bytes in [1 << 20, 40, 1] {
            let mut encoder = PieceEncoder::new(max_bytes, reading_at());
            let expected = every_kind(&mut encoder);
            let pieces = encoder.into_pieces();
            if max_bytes == 1 {
                assert_eq!(pieces.len(), expected.len(), "one record per piece");
            }
            let mut back = Vec::new();
            for piece in &pieces {
                assert_eq!(piece[0], VERSION_3);
                assert_eq!(reading(piece).unwrap(), Some(reading_at()));
                assert!(piece.len() <= max_bytes.max(70), "{} bytes", piece.len());
                back.extend(decode(piece).unwrap());
            }
            assert_eq!(back, expected, "cap {max_bytes}");
        }
    }

    #[test]
    fn a_run_of_commits_takes_about_fourteen_bytes_each() {
        let mut encoder = PieceEncoder::new(1 << 20, reading_at());
        let start = ts(1_765_000_000_000_000, 0, 3);
        for n in 0..1_000u64 {
            encoder.committed(
                (7 << 32) | n,
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                start,
                ts(1_765_000_000_000_001, n, 3),
            );
        }
        let pieces = encoder.into_pieces();
        assert_eq!(pieces.len(), 1);
        // The first record takes its timestamps in full, the others as deltas.
        assert!(pieces[0].len() <= 14 * 1_000 + 64, "{}", pieces[0].len());
    }

    #[test]
    fn version_two_pieces_still_decode_without_a_reading() {
        // A version-2 piece is a version-3 piece without the reading in its header.
        let mut encoder = PieceEncoder::new(1 << 20, reading_at());
        let expected = every_kind(&mut encoder);
        let v2 = to_version_2(&encoder.into_pieces().remove(0));
        assert_eq!(decode(&v2).unwrap(), expected);
        assert_eq!(reading(&v2).unwrap(), None);
        assert_eq!(reading(&[VERSION_1]).unwrap(), None);
    }

    #[test]
    fn a_reading_is_read_from_the_header_alone() {
        let mut encoder = PieceEncoder::new(1 << 20, reading_at());
        encoder.abort_requested(1, ts(9, 9, 9));
        let piece = encoder.into_pieces().remove(0);
        assert_eq!(reading(&piece[..COUNT_AT]).unwrap(), Some(reading_at()));
        for cut in 0..COUNT_AT {
            assert!(reading(&piece[..cut]).is_err(), "cut at {cut}");
        }
        assert!(reading(&[4]).is_err());
    }

    #[test]
    fn version_one_pieces_still_decode() {
        let mut v1 = vec![VERSION_1];
        let mut record = Vec::new();
        record::encode_abort_requested(&mut record, 42, ts(9, 9, 9));
        v1.extend_from_slice(&(record.len() as u32).to_le_bytes());
        v1.extend_from_slice(&record);
        assert_eq!(
            decode(&v1).unwrap(),
            vec![DecisionRecord::AbortRequested {
                txn_id: 42,
                decided_at: ts(9, 9, 9)
            }]
        );
    }

    #[test]
    fn damaged_pieces_are_errors_not_panics() {
        let mut encoder = PieceEncoder::new(1 << 20, reading_at());
        every_kind(&mut encoder);
        let piece = encoder.into_pieces().remove(0);
        for cut in 0..piece.len() {
            assert!(decode(&piece[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = piece.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        for version in [0u8, 4, 255] {
            let mut other = piece.clone();
            other[0] = version;
            assert!(decode(&other).is_err());
        }
        // Huge counts and varints are refused without allocating for them.
        assert!(decode(&[VERSION_2, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(decode(&[
            VERSION_2, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err());
        let mut huge = vec![VERSION_3];
        huge.extend_from_slice(&[0; READING_BYTES]);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge).is_err());
        let records = COUNT_AT + COUNT_BYTES + 1;
        for byte in 0..=255u8 {
            let mut flipped = piece.clone();
            let at = records + usize::from(byte) % (piece.len() - records);
            flipped[at] ^= byte;
            let _ = decode(&flipped); // an error or other records, never a panic
        }
    }
}
