//! The commit log: an append-only, checksummed write-ahead log in a directory, after etcd's WAL.
//!
//! # Guarantees
//! - [`CommitLog::append`] writes a batch of records with ONE `write` and, unless asked not to,
//!   ONE `fdatasync`; when it returns with `sync`, every record of the batch is on disk.
//! - Records get consecutive sequence numbers starting at 1, across segments and restarts.
//! - [`CommitLog::open`] replays every record after the checkpoint, in order, exactly once.
//! - A record is either read back whole and verified, or recovery stops: a torn or short record at
//!   the tail of the LAST segment (a batch whose `fdatasync` never returned, so never acknowledged)
//!   is cut off; damage anywhere else, including damage in the last segment that is followed by a
//!   record written after a later `fdatasync`, is [`LogError::Corrupt`], naming the file and
//!   offset.
//! - A failed `write` or `fdatasync` aborts the process; it is never retried (after a failed
//!   fsync the kernel may have dropped the dirty pages, and a retry could "succeed" on lost data).
//! - One process at a time: the directory is locked with `flock` on `LOCK`.
//!
//! # On-disk format
//! Format version 2, all integers little-endian: the segment files (`<first_seq:016x>.wal`), their
//! header and record frames, the `checkpoint` file, and what recovery does with each, are
//! described in one place, the documentation site's "Commit log format" page
//! (`docs/commit-log.md` in the repository). `format.rs` holds the constants; `encoder.rs`,
//! `decoder.rs` and `recovery.rs` write, read and repair it.

mod decoder;
mod encoder;
mod format;
mod recovery;
mod segments;
mod sync_timings;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub use decoder::{DecodeError, DecodeErrorKind, Record, SegmentDecoder};
pub use format::{FORMAT_VERSION, FRAME_HEADER_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN};
pub use recovery::{Recovered, RecoveryStats};
pub use sync_timings::{SyncTimings, SYNC_BUCKET_BOUNDS_US};

use encoder::Encoder;

/// Default segment size, as etcd's WAL.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Smallest accepted segment size (tests use small segments to exercise rotation).
pub const MIN_SEGMENT_SIZE: u64 = 1024;

#[derive(Debug)]
pub enum LogError {
    Io {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    /// Acknowledged data is unreadable: start-up must stop.
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// Another process holds the log directory.
    Locked(PathBuf),
    RecordTooLarge(usize),
    InvalidOption(String),
    Closed,
}

impl LogError {
    pub(crate) fn io(path: &Path, operation: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            operation,
            source,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io {
                path,
                operation,
                source,
            } => write!(f, "cannot {operation} {}: {source}", path.display()),
            Self::Corrupt {
                path,
                offset,
                detail,
            } => write!(
                f,
                "commit log is damaged in {} at offset {offset}: {detail}; refusing to start \
                 (only a torn tail of the last segment is repaired automatically)",
                path.display()
            ),
            Self::Locked(dir) => write!(
                f,
                "commit log directory {} is in use by another process",
                dir.display()
            ),
            Self::RecordTooLarge(len) => write!(
                f,
                "record of {len} bytes is over the limit of {MAX_RECORD_LEN} bytes"
            ),
            Self::InvalidOption(message) => f.write_str(message),
            Self::Closed => write!(f, "the commit log is closed"),
        }
    }
}

impl std::error::Error for LogError {}

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is rotated when the next batch would not fit.
    pub segment_size: u64,
    /// Preallocate each segment to `segment_size` (cheaper `fdatasync`; disable on file systems
    /// without `fallocate` support if emulation is too slow).
    pub preallocate: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            preallocate: true,
        }
    }
}

/// Everything appended up to `through_seq`, to be synced on another thread
/// ([`CommitLog::sync_point`]). A rotation syncs the old segment itself before switching, so a
/// point on a segment that is no longer active is already durable: syncing it again is harmless.
pub struct SyncPoint {
    file: std::sync::Arc<File>,
    path: PathBuf,
    pub through_seq: u64,
}

impl SyncPoint {
    /// `fdatasync`; a failure aborts the process, as the log's own sync does. Returns how long
    /// it took.
    pub fn sync(&self) -> std::time::Duration {
        encoder::sync_file(&self.file, &self.path)
    }
}

pub struct CommitLog {
    dir: PathBuf,
    options: LogOptions,
    encoder: Encoder,
    /// `(first_seq, path)` of every segment, the active one last.
    segments: Vec<(u64, PathBuf)>,
    next_seq: u64,
    _lock: File,
}

impl CommitLog {
    /// Opens (creating if needed) the log in `dir`, replaying every record after the checkpoint
    /// through `visit(seq, payload)`, and makes it ready to append.
    pub fn open(
        dir: &Path,
        options: LogOptions,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(Self, Recovered), LogError> {
        if options.segment_size < MIN_SEGMENT_SIZE {
            return Err(LogError::InvalidOption(format!(
                "segment_size must be at least {MIN_SEGMENT_SIZE} bytes, got {}",
                options.segment_size
            )));
        }
        std::fs::create_dir_all(dir).map_err(|err| LogError::io(dir, "create", err))?;
        let lock = segments::lock_dir(dir)?;
        let recovered = recovery::recover(dir, visit)?;
        let preallocate = if options.preallocate {
            options.segment_size
        } else {
            0
        };
        let mut segment_list = recovered.segments.clone();
        let encoder = match segment_list.last() {
            Some((_, path)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|err| LogError::io(path, "open", err))?;
                segments::preallocate_file(&file, path, preallocate)?;
                if let Err(err) = file.sync_all() {
                    segments::fatal(path, "fsync", &err);
                }
                Encoder::new(file, path.clone(), recovered.last_segment_end)
            }
            None => {
                let (file, path) = segments::create_segment(dir, recovered.next_seq, preallocate)?;
                segment_list.push((recovered.next_seq, path.clone()));
                Encoder::new(file, path, SEGMENT_HEADER_LEN as u64)
            }
        };
        Ok((
            Self {
                dir: dir.to_path_buf(),
                options,
                encoder,
                segments: segment_list,
                next_seq: recovered.next_seq,
                _lock: lock,
            },
            recovered,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// First sequence number of each segment, oldest first.
    pub fn segment_first_seqs(&self) -> Vec<u64> {
        self.segments.iter().map(|(seq, _)| *seq).collect()
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|(_, path)| path.clone()).collect()
    }

    /// Appends `payloads` as consecutive records in one write (and one `fdatasync` when `sync`);
    /// returns the sequence numbers of the first and last. An empty batch writes nothing.
    pub fn append<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
        sync: bool,
    ) -> Result<Option<(u64, u64)>, LogError> {
        if payloads.is_empty() {
            return Ok(None);
        }
        let len = Encoder::batch_len(payloads)?;
        let used = self.encoder.offset();
        if used > SEGMENT_HEADER_LEN as u64 && used + len > self.options.segment_size {
            self.rotate()?;
        }
        let first = self.next_seq;
        self.encoder.append(first, payloads, sync);
        self.next_seq += payloads.len() as u64;
        Ok(Some((first, self.next_seq - 1)))
    }

    /// `fdatasync` of everything appended so far (for appends made with `sync = false`).
    pub fn sync(&mut self) {
        self.encoder.sync();
    }

    /// Where to `fdatasync` everything appended so far from another thread, so the log's owner
    /// can append meanwhile (None when nothing is unsynced). Report it with [`Self::synced`].
    pub fn sync_point(&self) -> Option<SyncPoint> {
        if self.encoder.unsynced() == 0 {
            return None;
        }
        let (file, path) = self.encoder.handle();
        Some(SyncPoint {
            file,
            path,
            through_seq: self.next_seq - 1,
        })
    }

    /// `point` was synced (taking `took`): records appended after it form the sync group now.
    pub fn synced(&mut self, point: &SyncPoint, took: std::time::Duration) {
        let after = (self.next_seq - 1).saturating_sub(point.through_seq);
        self.encoder.synced_all_but(after, took);
    }

    /// How long the `fdatasync`s since opening took.
    pub fn sync_timings(&self) -> &SyncTimings {
        &self.encoder.timings
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        // The old segment must be complete on disk before a newer one exists, or recovery would
        // see damage in a segment that is no longer the last.
        self.encoder.sync();
        let preallocate = if self.options.preallocate {
            self.options.segment_size
        } else {
            0
        };
        let (file, path) = segments::create_segment(&self.dir, self.next_seq, preallocate)?;
        self.segments.push((self.next_seq, path.clone()));
        let timings = std::mem::take(&mut self.encoder.timings);
        self.encoder = Encoder::new(file, path, SEGMENT_HEADER_LEN as u64);
        self.encoder.timings = timings;
        Ok(())
    }

    /// Saves `data` as the checkpoint covering records `..= covered_seq`, then deletes the segments
    /// whose records are all covered (never the active one). Returns how many were deleted.
    pub fn checkpoint(&mut self, covered_seq: u64, data: &[u8]) -> Result<usize, LogError> {
        if covered_seq >= self.next_seq {
            return Err(LogError::InvalidOption(format!(
                "covered_seq must be below next_seq={} (a checkpoint covers appended records \
                 only), got {covered_seq}",
                self.next_seq
            )));
        }
        // The checkpoint may describe records that were appended without sync: make them durable
        // first so the checkpoint never claims more than the log holds.
        self.encoder.sync();
        segments::write_checkpoint(&self.dir, covered_seq, data)?;
        let covered_segments = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].0 - 1 <= covered_seq)
            .count();
        let removed: Vec<PathBuf> = self
            .segments
            .drain(..covered_segments)
            .map(|(_, path)| path)
            .collect();
        segments::remove_segments(&self.dir, &removed)?;
        Ok(removed.len())
    }
}

#[cfg(test)]
mod tests;
