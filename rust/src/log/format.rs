//! The byte layout of segments, records and the checkpoint file (see the module doc of
//! [`crate::log`] for the prose version). Everything is little-endian.

use std::fmt;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"HLCWAL\r\n";
/// First 8 bytes of the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"HLCCKP\r\n";
/// Bumped on any incompatible change of the layout below; readers refuse other versions.
/// Version 2 added `group_index` to the frame header, so recovery can tell a torn tail from
/// damage to records that were already synced.
pub const FORMAT_VERSION: u16 = 2;

/// `magic[8] | version u16 | flags u16 | reserved u32 | first_seq u64 | crc32c u32 | zero u32`.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// `crc32c u32 | len u32 | seq u64 | group_index u32`, then `len` payload bytes.
///
/// `group_index` is the record's position among the records written since the last completed
/// `fdatasync` (its "sync group"): `seq - group_index` is the first record that a crash could
/// have torn together with this one.
pub const FRAME_HEADER_LEN: usize = 20;
/// Largest payload of one record; anything larger read from disk is damage, not data.
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// `magic[8] | version u16 | flags u16 | len u32 | covered_seq u64 | crc32c u32 | zero u32`.
pub const CHECKPOINT_HEADER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_seq: u64,
}

/// Why bytes are not a valid header or frame. Positions are added by the caller, who knows the
/// file and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    UnsupportedVersion(u16),
    HeaderChecksum,
    /// Fewer bytes than the structure needs.
    Short {
        needed: usize,
        available: usize,
    },
    RecordTooLarge(usize),
    RecordChecksum {
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "bad magic bytes"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "format version {v} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            Self::HeaderChecksum => write!(f, "header checksum mismatch"),
            Self::Short { needed, available } => {
                write!(f, "short read: needed {needed} bytes, {available} present")
            }
            Self::RecordTooLarge(len) => write!(
                f,
                "record length {len} is over the limit of {MAX_RECORD_LEN} bytes"
            ),
            Self::RecordChecksum { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // flags (10..12) and reserved (12..16) stay zero in version 1.
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&out[..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let header = bytes.get(..SEGMENT_HEADER_LEN).ok_or(FormatError::Short {
            needed: SEGMENT_HEADER_LEN,
            available: bytes.len(),
        })?;
        if header[..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if crc32c::crc32c(&header[..24]) != read_u32(header, 24) {
            return Err(FormatError::HeaderChecksum);
        }
        Ok(Self {
            first_seq: read_u64(header, 16),
        })
    }
}

/// Appends one framed record to `out`. The checksum covers everything after it (length,
/// sequence number, group index, payload), so a record moved or renumbered by damage does not
/// verify.
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, group_index: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let start = out.len();
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..].copy_from_slice(&group_index.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    // One pass over the covered bytes where they now lie together (two calls, the header's and
    // the payload's, cost more than the checksum of a small record itself).
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// What sits at one position of a segment body.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Record {
        seq: u64,
        /// Position in the sync group: records `seq - group_index ..= seq` were written together
        /// after the same `fdatasync`.
        group_index: u32,
        payload: &'a [u8],
    },
    /// An all-zero frame header: the end of the written data (the rest is preallocated zeros).
    End,
}

/// Decodes the frame at the start of `bytes`. An empty slice is `End` (end of file).
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FormatError> {
    // Fewer than a header's worth of zeros at the end of a preallocated segment is also the end.
    if bytes.len() < FRAME_HEADER_LEN && bytes.iter().all(|&b| b == 0) {
        return Ok(Frame::End);
    }
    let header = bytes.get(..FRAME_HEADER_LEN).ok_or(FormatError::Short {
        needed: FRAME_HEADER_LEN,
        available: bytes.len(),
    })?;
    // A real record has seq >= 1, so its header is never all zeros.
    if header.iter().all(|&b| b == 0) {
        return Ok(Frame::End);
    }
    let stored = read_u32(header, 0);
    let len = read_u32(header, 4) as usize;
    if len > MAX_RECORD_LEN {
        return Err(FormatError::RecordTooLarge(len));
    }
    let seq = read_u64(header, 8);
    let group_index = read_u32(header, 16);
    let payload =
        bytes
            .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
            .ok_or(FormatError::Short {
                needed: FRAME_HEADER_LEN + len,
                available: bytes.len(),
            })?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[4..]), payload);
    if computed != stored {
        return Err(FormatError::RecordChecksum { stored, computed });
    }
    Ok(Frame::Record {
        seq,
        group_index,
        payload,
    })
}

/// The checkpoint file: opaque state from the log's user, valid for every record up to
/// `covered_seq`.
pub fn encode_checkpoint(covered_seq: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN + data.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&covered_seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// `(covered_seq, data)` of a checkpoint file's bytes.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(u64, &[u8]), FormatError> {
    let header = bytes
        .get(..CHECKPOINT_HEADER_LEN)
        .ok_or(FormatError::Short {
            needed: CHECKPOINT_HEADER_LEN,
            available: bytes.len(),
        })?;
    if header[..8] != CHECKPOINT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let len = read_u32(header, 12) as usize;
    let data = &bytes[CHECKPOINT_HEADER_LEN..];
    if data.len() != len {
        return Err(FormatError::Short {
            needed: CHECKPOINT_HEADER_LEN + len,
            available: bytes.len(),
        });
    }
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[..24]), data);
    if computed != read_u32(header, 24) {
        return Err(FormatError::HeaderChecksum);
    }
    Ok((read_u64(header, 16), data))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let bytes = SegmentHeader { first_seq: 42 }.encode();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap().first_seq, 42);
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::BadMagic));
        let mut bad = bytes;
        bad[17] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(FormatError::HeaderChecksum)
        );
        let mut bad = bytes;
        bad[8] = 9;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(FormatError::UnsupportedVersion(9))
        );
        assert!(matches!(
            SegmentHeader::decode(&bytes[..10]),
            Err(FormatError::Short { .. })
        ));
    }

    #[test]
    fn frame_round_trips() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, 0, b"hello");
        encode_frame(&mut buf, 8, 1, b"");
        let first = decode_frame(&buf).unwrap();
        assert_eq!(
            first,
            Frame::Record {
                seq: 7,
                group_index: 0,
                payload: b"hello"
            }
        );
        let rest = &buf[FRAME_HEADER_LEN + 5..];
        assert_eq!(
            decode_frame(rest).unwrap(),
            Frame::Record {
                seq: 8,
                group_index: 1,
                payload: b""
            }
        );
        assert_eq!(decode_frame(&[]).unwrap(), Frame::End);
        assert_eq!(decode_frame(&[0u8; 40]).unwrap(), Frame::End);
    }

    /// Every single-bit flip in a frame is detected (CRC32C catches all 1-bit errors).
    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 3, 2, b"some payload bytes");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&bad), Ok(Frame::Record { seq: 3, group_index: 2, payload }) if payload == b"some payload bytes"),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn short_and_oversized_frames_are_errors() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 0, b"abcdef");
        assert!(matches!(
            decode_frame(&buf[..buf.len() - 1]),
            Err(FormatError::Short { .. })
        ));
        assert!(matches!(
            decode_frame(&buf[..5]),
            Err(FormatError::Short { .. })
        ));
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(&huge),
            Err(FormatError::RecordTooLarge(_))
        ));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let bytes = encode_checkpoint(99, b"state");
        assert_eq!(decode_checkpoint(&bytes).unwrap(), (99, &b"state"[..]));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        assert_eq!(decode_checkpoint(&bad), Err(FormatError::HeaderChecksum));
        assert!(decode_checkpoint(&bytes[..bytes.len() - 1]).is_err());
    }
}
