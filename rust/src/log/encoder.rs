//! Appending to the active segment: a batch of records is framed into one buffer and written with
//! one `write` and (when asked) one `fdatasync`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::format::{encode_frame, FRAME_HEADER_LEN, MAX_RECORD_LEN};
use crate::log::segments::fatal;
use crate::log::sync_timings::SyncTimings;
use crate::log::LogError;

pub struct Encoder {
    /// Shared with a [`super::SyncPoint`] that syncs it on another thread.
    file: Arc<File>,
    path: PathBuf,
    /// Where the next frame goes: just past the last written record.
    offset: u64,
    /// Reused between batches so appending allocates nothing in the steady state.
    buffer: Vec<u8>,
    /// Records written since the last sync: the size of the current sync group, which every
    /// frame carries as its `group_index` so that recovery can tell a torn tail from damage.
    unsynced: u32,
    /// How long each `fdatasync` took; carried from segment to segment.
    pub timings: SyncTimings,
}

impl Encoder {
    pub fn new(file: File, path: PathBuf, offset: u64) -> Self {
        Self {
            file: Arc::new(file),
            path,
            offset,
            buffer: Vec::new(),
            unsynced: 0,
            timings: SyncTimings::default(),
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes the batch will take on disk, or an error when one record is over the limit.
    pub fn batch_len<P: AsRef<[u8]>>(payloads: &[P]) -> Result<u64, LogError> {
        let mut total = 0u64;
        for payload in payloads {
            let len = payload.as_ref().len();
            if len > MAX_RECORD_LEN {
                return Err(LogError::RecordTooLarge(len));
            }
            total += (FRAME_HEADER_LEN + len) as u64;
        }
        Ok(total)
    }

    /// Writes `payloads` as records `first_seq, first_seq + 1, ...` in one `write`, then
    /// `fdatasync`s when `sync`. A failed write or sync aborts the process: part of the batch may
    /// be on disk, and only recovery may decide what to keep.
    pub fn append<P: AsRef<[u8]>>(&mut self, first_seq: u64, payloads: &[P], sync: bool) {
        self.buffer.clear();
        for (seq, payload) in (first_seq..).zip(payloads) {
            encode_frame(&mut self.buffer, seq, self.unsynced, payload.as_ref());
            // Saturating: a group index that is too small only makes recovery more lenient
            // (it treats more of the tail as unsynced), never stricter.
            self.unsynced = self.unsynced.saturating_add(1);
        }
        if let Err(err) = self.file.write_all_at(&self.buffer, self.offset) {
            fatal(&self.path, "write", &err);
        }
        self.offset += self.buffer.len() as u64;
        if sync {
            self.sync();
        }
        // Do not keep a buffer from one huge batch around for ever.
        if self.buffer.capacity() > 4 << 20 {
            self.buffer = Vec::new();
        }
    }

    /// `fdatasync` of everything written so far; a failure aborts the process.
    pub fn sync(&mut self) {
        if self.unsynced == 0 {
            return;
        }
        self.timings.record(sync_file(&self.file, &self.path));
        self.unsynced = 0;
    }

    /// Records written since the last completed sync.
    pub fn unsynced(&self) -> u32 {
        self.unsynced
    }

    /// The segment's file and path, for a sync on another thread.
    pub fn handle(&self) -> (Arc<File>, PathBuf) {
        (Arc::clone(&self.file), self.path.clone())
    }

    /// A sync made elsewhere covered all but the last `after` records written: the current sync
    /// group shrinks to them (never grows: a rotation or a sync here may have emptied it).
    pub fn synced_all_but(&mut self, after: u64, took: Duration) {
        self.unsynced = self.unsynced.min(u32::try_from(after).unwrap_or(u32::MAX));
        self.timings.record(took);
    }
}

/// `fdatasync` of `file`; a failure aborts the process (never retried: after a failed
/// `fdatasync` the page cache's state is unknown). Returns how long it took.
pub fn sync_file(file: &File, path: &std::path::Path) -> Duration {
    let started = Instant::now();
    if let Err(err) = file.sync_data() {
        fatal(path, "fdatasync", &err);
    }
    started.elapsed()
}
