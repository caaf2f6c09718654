//! Start-up replay: the checkpoint, then every segment in sequence order, each record handed to
//! the caller once.
//!
//! A torn or short record at the tail of the LAST segment was never acknowledged (its batch's
//! fdatasync had not returned), so it is cut off. It is torn only if nothing written after a
//! later fdatasync follows it: every frame says where its sync group starts, and an intact frame
//! further on whose group starts after the damaged record proves the damaged one had been synced
//! (and so acknowledged). That, and damage anywhere else, means acknowledged data is unreadable:
//! start-up stops with an error naming the file and offset.
//!
//! Segments that the checkpoint covers entirely are leftovers of a checkpoint whose removals a
//! crash interrupted: they are not read, and their removal is finished here.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log::decoder::{DecodeError, SegmentDecoder};
use crate::log::format::decode_checkpoint;
use crate::log::segments::{fatal, list_segments, remove_segments, CHECKPOINT_NAME};
use crate::log::LogError;

/// Figures of one recovery, for the start-up log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub segments: usize,
    /// Records handed to the caller (those after the checkpoint).
    pub records: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Bytes cut from the tail of the last segment (0 after a clean shutdown).
    pub truncated_bytes: u64,
    /// Where the cut was made, if any.
    pub truncated_at: Option<(PathBuf, u64)>,
    pub elapsed: Duration,
}

/// What recovery found, for the log to resume appending.
#[derive(Debug)]
pub struct Recovered {
    pub stats: RecoveryStats,
    /// `(covered_seq, data)` of the checkpoint file, if there is one.
    pub checkpoint: Option<(u64, Vec<u8>)>,
    /// `(first_seq, path)` of every segment, in order.
    pub segments: Vec<(u64, PathBuf)>,
    /// Offset in the last segment where appending resumes.
    pub last_segment_end: u64,
    pub next_seq: u64,
}

/// Replays the log in `dir`, calling `visit(seq, payload)` for every record after the checkpoint.
pub fn recover(dir: &Path, visit: &mut dyn FnMut(u64, &[u8])) -> Result<Recovered, LogError> {
    let started = Instant::now();
    let mut stats = RecoveryStats::default();
    let checkpoint = read_checkpoint(dir)?;
    let covered = checkpoint.as_ref().map_or(0, |(seq, _)| *seq);
    let mut segments = list_segments(dir)?;
    // The same rule as `CommitLog::checkpoint`: a segment is covered when the next one starts at
    // or below `covered + 1`.
    let leftovers = segments
        .windows(2)
        .take_while(|pair| pair[1].0.saturating_sub(1) <= covered)
        .count();
    let leftover_paths: Vec<PathBuf> = segments.drain(..leftovers).map(|(_, p)| p).collect();
    remove_segments(dir, &leftover_paths)?;
    stats.segments = segments.len();

    let mut next_seq = covered + 1;
    let mut last_segment_end = 0;
    for (index, (named_seq, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let bytes = fs::read(path).map_err(|err| LogError::io(path, "read", err))?;
        stats.bytes += bytes.len() as u64;
        let corrupt = |err: DecodeError| LogError::Corrupt {
            path: path.clone(),
            offset: err.offset,
            detail: err.to_string(),
        };
        let mut decoder = SegmentDecoder::new(&bytes).map_err(corrupt)?;
        let first_seq = decoder.header().first_seq;
        if first_seq != *named_seq {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                detail: format!(
                    "header says first sequence number {first_seq}, name says {named_seq}"
                ),
            });
        }
        // Segments must continue one another; the first may start inside the checkpoint's span
        // (a crash between writing the checkpoint and removing the segments it covers).
        let continues = if index == 0 {
            first_seq <= next_seq
        } else {
            first_seq == next_seq
        };
        if !continues {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                detail: format!(
                    "segment starts at sequence number {first_seq} but the log so far ends before \
                     {next_seq} (a segment is missing)"
                ),
            });
        }
        loop {
            match decoder.next_record() {
                Ok(Some(record)) => {
                    if record.seq > covered {
                        visit(record.seq, record.payload);
                        stats.records += 1;
                    }
                }
                Ok(None) => break,
                Err(err) if is_last => {
                    if let Some(later) = decoder.later_synced_record(decoder.next_seq()) {
                        return Err(LogError::Corrupt {
                            path: path.clone(),
                            offset: err.offset,
                            detail: format!(
                                "{err}; record {} at offset {} was written after a later \
                                 fdatasync (its sync group starts at record {}), so the damaged \
                                 records had been synced and acknowledged",
                                later.seq, later.offset, later.group_first
                            ),
                        });
                    }
                    let cut = decoder.valid_end();
                    let written_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    stats.truncated_bytes = (written_end as u64).saturating_sub(cut);
                    stats.truncated_at = Some((path.clone(), err.offset));
                    truncate_tail(path, cut)?;
                    break;
                }
                Err(err) => return Err(corrupt(err)),
            }
        }
        next_seq = next_seq.max(decoder.next_seq());
        last_segment_end = decoder.valid_end();
    }
    stats.elapsed = started.elapsed();
    Ok(Recovered {
        stats,
        checkpoint,
        segments,
        last_segment_end,
        next_seq,
    })
}

fn read_checkpoint(dir: &Path) -> Result<Option<(u64, Vec<u8>)>, LogError> {
    let path = dir.join(CHECKPOINT_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::io(&path, "read", err)),
    };
    // The checkpoint is replaced by rename, so it is whole or absent: damage is never a torn write.
    let (covered, data) = decode_checkpoint(&bytes).map_err(|err| LogError::Corrupt {
        path: path.clone(),
        offset: 0,
        detail: format!("bad checkpoint: {err}"),
    })?;
    Ok(Some((covered, data.to_vec())))
}

/// Cuts the torn tail: everything from `offset` on becomes zeros again (the file is shrunk, then
/// the caller preallocates it back), and the cut is made durable before anything is appended.
fn truncate_tail(path: &PathBuf, offset: u64) -> Result<(), LogError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|err| LogError::io(path, "open", err))?;
    file.set_len(offset)
        .map_err(|err| LogError::io(path, "truncate", err))?;
    if let Err(err) = file.sync_all() {
        fatal(path, "fsync", &err);
    }
    Ok(())
}
