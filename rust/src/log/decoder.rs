//! Reading one segment: its header, then its records in order, checking framing, checksums and
//! sequence numbers. The decoder only reports what it finds and where; deciding whether damage is
//! a torn tail (repairable) or corruption (fatal) is `recovery`'s job.

use std::fmt;

use crate::log::format::{
    decode_frame, FormatError, Frame, SegmentHeader, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// What went wrong at `offset` (bytes from the start of the segment file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: u64,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    Header(FormatError),
    Frame(FormatError),
    /// A record verified but carries the wrong sequence number (lost or misplaced records).
    Sequence {
        expected: u64,
        found: u64,
    },
    /// Non-zero bytes after the end-of-data marker.
    TrailingGarbage,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DecodeErrorKind::Header(err) => write!(f, "bad segment header: {err}"),
            DecodeErrorKind::Frame(err) => write!(f, "bad record: {err}"),
            DecodeErrorKind::Sequence { expected, found } => write!(
                f,
                "record sequence number {found} where {expected} was expected"
            ),
            DecodeErrorKind::TrailingGarbage => {
                write!(f, "non-zero bytes after the end of the written data")
            }
        }
    }
}

/// Iterates the records of one segment held in memory.
pub struct SegmentDecoder<'a> {
    bytes: &'a [u8],
    offset: usize,
    next_seq: u64,
    header: SegmentHeader,
    finished: bool,
}

/// One verified record and where it starts in the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub offset: u64,
    /// First record of this record's sync group (written after the same `fdatasync`).
    pub group_first: u64,
    pub payload: &'a [u8],
}

impl<'a> SegmentDecoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = SegmentHeader::decode(bytes).map_err(|err| DecodeError {
            offset: 0,
            kind: DecodeErrorKind::Header(err),
        })?;
        Ok(Self {
            bytes,
            offset: SEGMENT_HEADER_LEN,
            next_seq: header.first_seq,
            header,
            finished: false,
        })
    }

    pub fn header(&self) -> SegmentHeader {
        self.header
    }

    /// Offset just past the last record returned so far: where valid data ends.
    pub fn valid_end(&self) -> u64 {
        self.offset as u64
    }

    /// Sequence number the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next record, `None` at the end of the data, or the damage found where a record should
    /// be. After an error the decoder stays at the damaged offset.
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>, DecodeError> {
        if self.finished {
            return Ok(None);
        }
        let rest = &self.bytes[self.offset..];
        match decode_frame(rest) {
            Ok(Frame::End) => {
                // Past the end marker only preallocated zeros may follow; anything else is
                // damage (or a torn write that left its header as zeros).
                let tail_start = self.offset + FRAME_HEADER_LEN.min(rest.len());
                if let Some(position) = self.bytes[tail_start..].iter().position(|&b| b != 0) {
                    return Err(DecodeError {
                        offset: (tail_start + position) as u64,
                        kind: DecodeErrorKind::TrailingGarbage,
                    });
                }
                self.finished = true;
                Ok(None)
            }
            Ok(Frame::Record {
                seq,
                group_index,
                payload,
            }) => {
                if seq != self.next_seq {
                    return Err(DecodeError {
                        offset: self.offset as u64,
                        kind: DecodeErrorKind::Sequence {
                            expected: self.next_seq,
                            found: seq,
                        },
                    });
                }
                let record = Record {
                    seq,
                    offset: self.offset as u64,
                    group_first: seq.saturating_sub(u64::from(group_index)),
                    payload,
                };
                self.offset += FRAME_HEADER_LEN + payload.len();
                self.next_seq += 1;
                Ok(Some(record))
            }
            Err(err) => Err(DecodeError {
                offset: self.offset as u64,
                kind: DecodeErrorKind::Frame(err),
            }),
        }
    }

    /// After damage at the decoder's offset: the first intact record further on whose sync group
    /// starts after `damaged_seq`, if any. Such a record was written after an `fdatasync` that
    /// already covered the damaged one, so the damage is not a torn write but lost data.
    ///
    /// Frames are not aligned, so every byte offset is tried; a candidate must carry a sequence
    /// number the rest of the segment could hold before its checksum is computed, which keeps
    /// the scan linear on garbage.
    pub fn later_synced_record(&self, damaged_seq: u64) -> Option<Record<'a>> {
        let end = self.bytes.len();
        let most_records = (end - self.offset) as u64 / FRAME_HEADER_LEN as u64 + 1;
        let plausible = damaged_seq..damaged_seq.saturating_add(most_records);
        (self.offset..end).find_map(|at| {
            let rest = &self.bytes[at..];
            let seq = rest.get(8..16).map(|word| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                u64::from_le_bytes(bytes)
            })?;
            if !plausible.contains(&seq) {
                return None;
            }
            match decode_frame(rest) {
                Ok(Frame::Record {
                    seq,
                    group_index,
                    payload,
                }) => {
                    let group_first = seq.saturating_sub(u64::from(group_index));
                    (group_first > damaged_seq).then_some(Record {
                        seq,
                        offset: at as u64,
                        group_first,
                        payload,
                    })
                }
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::encode_frame;

    fn segment(first_seq: u64, payloads: &[&[u8]], zeros: usize) -> Vec<u8> {
        let mut bytes = SegmentHeader { first_seq }.encode().to_vec();
        for (i, payload) in payloads.iter().enumerate() {
            encode_frame(&mut bytes, first_seq + i as u64, i as u32, payload);
        }
        bytes.extend(std::iter::repeat_n(0u8, zeros));
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, DecodeError> {
        let mut decoder = SegmentDecoder::new(bytes)?;
        let mut out = Vec::new();
        while let Some(record) = decoder.next_record()? {
            out.push((record.seq, record.payload.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn reads_records_with_and_without_preallocated_tail() {
        for zeros in [0, 7, 16, 4096] {
            let bytes = segment(10, &[b"a", b"bb", b"ccc"], zeros);
            assert_eq!(
                read_all(&bytes).unwrap(),
                vec![
                    (10, b"a".to_vec()),
                    (11, b"bb".to_vec()),
                    (12, b"ccc".to_vec())
                ],
                "zeros={zeros}"
            );
        }
    }

    #[test]
    fn reports_damage_with_its_offset() {
        let clean = segment(1, &[b"first", b"second"], 64);
        let second_at = (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 5) as u64;

        let mut flipped = clean.clone();
        flipped[second_at as usize + FRAME_HEADER_LEN + 2] ^= 0x40;
        let err = read_all(&flipped).unwrap_err();
        assert_eq!(err.offset, second_at);
        assert!(matches!(
            err.kind,
            DecodeErrorKind::Frame(FormatError::RecordChecksum { .. })
        ));

        let mut garbage = clean.clone();
        let last = garbage.len() - 3;
        garbage[last] = 1;
        let err = read_all(&garbage).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TrailingGarbage);
        assert_eq!(err.offset, last as u64);

        let truncated = &clean[..second_at as usize + 4];
        let err = read_all(truncated).unwrap_err();
        assert_eq!(err.offset, second_at);
        assert!(matches!(
            err.kind,
            DecodeErrorKind::Frame(FormatError::Short { .. })
        ));

        let err = SegmentDecoder::new(&clean[..20]).err().unwrap();
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn wrong_sequence_number_is_damage() {
        let mut bytes = SegmentHeader { first_seq: 5 }.encode().to_vec();
        encode_frame(&mut bytes, 5, 0, b"x");
        encode_frame(&mut bytes, 7, 1, b"y");
        let err = read_all(&bytes).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::Sequence {
                expected: 6,
                found: 7
            }
        );
    }
}
