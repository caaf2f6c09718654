//! Segment files on disk: naming, listing, creating (temp file + rename + directory fsync),
//! removing, the checkpoint file, and the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::log::format::{encode_checkpoint, SegmentHeader};
use crate::log::LogError;

pub const SEGMENT_SUFFIX: &str = ".wal";
pub const TEMP_SUFFIX: &str = ".tmp";
pub const CHECKPOINT_NAME: &str = "checkpoint";
pub const LOCK_NAME: &str = "LOCK";

/// `<first_seq as 16 hex digits>.wal`: names sort like sequence numbers.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `(first_seq, path)` of every segment in `dir`, in sequence order. Leftover temp files (a crash
/// during creation, before the rename made them part of the log) are removed.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    let mut removed_temp = false;
    for entry in fs::read_dir(dir).map_err(|err| LogError::io(dir, "list", err))? {
        let entry = entry.map_err(|err| LogError::io(dir, "list", err))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            segments.push((seq, entry.path()));
        } else if name.ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path())
                .map_err(|err| LogError::io(&entry.path(), "remove", err))?;
            removed_temp = true;
        }
    }
    if removed_temp {
        sync_dir(dir);
    }
    segments.sort();
    Ok(segments)
}

/// Makes the directory's entries (creates, renames, removes) durable. A failure is fatal.
pub fn sync_dir(dir: &Path) {
    if let Err(err) = File::open(dir).and_then(|handle| handle.sync_all()) {
        fatal(dir, "fsync the directory", &err);
    }
}

/// Creates segment `first_seq`: header written and synced in a temp file, space preallocated,
/// renamed into place, directory synced. Returns the file open for writing.
pub fn create_segment(
    dir: &Path,
    first_seq: u64,
    preallocate: u64,
) -> Result<(File, PathBuf), LogError> {
    let path = dir.join(segment_name(first_seq));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", segment_name(first_seq)));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|err| LogError::io(&temp, "create", err))?;
    let header = SegmentHeader { first_seq }.encode();
    let result = file
        .write_all(&header)
        .map_err(|err| LogError::io(&temp, "write", err))
        .and_then(|()| preallocate_file(&file, &temp, preallocate));
    if let Err(err) = result {
        // Nothing refers to the temp file yet; drop it so a full disk does not fill further.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    if let Err(err) = file.sync_all() {
        fatal(&temp, "fsync", &err);
    }
    fs::rename(&temp, &path).map_err(|err| LogError::io(&path, "rename", err))?;
    sync_dir(dir);
    Ok((file, path))
}

/// Allocates `len` bytes of zeros so that later appends do not change the file size and an
/// `fdatasync` need not write metadata (what etcd does for its WAL).
pub fn preallocate_file(file: &File, path: &Path, len: u64) -> Result<(), LogError> {
    if len == 0 {
        return Ok(());
    }
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(LogError::InvalidOption(format!(
            "segment_size {len} is too large for this platform"
        )));
    };
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is owned by `file`
    // for the duration of the call.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if code != 0 {
        return Err(LogError::io(
            path,
            "preallocate",
            std::io::Error::from_raw_os_error(code),
        ));
    }
    Ok(())
}

/// Removes segment files (already known to be covered by a checkpoint), then syncs the directory.
pub fn remove_segments(dir: &Path, paths: &[PathBuf]) -> Result<(), LogError> {
    for path in paths {
        fs::remove_file(path).map_err(|err| LogError::io(path, "remove", err))?;
    }
    if !paths.is_empty() {
        sync_dir(dir);
    }
    Ok(())
}

/// Atomically replaces the checkpoint file: temp file, fsync, rename, directory fsync.
pub fn write_checkpoint(dir: &Path, covered_seq: u64, data: &[u8]) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_NAME);
    let temp = dir.join(format!("{CHECKPOINT_NAME}{TEMP_SUFFIX}"));
    let mut file = File::create(&temp).map_err(|err| LogError::io(&temp, "create", err))?;
    file.write_all(&encode_checkpoint(covered_seq, data))
        .map_err(|err| LogError::io(&temp, "write", err))?;
    if let Err(err) = file.sync_all() {
        fatal(&temp, "fsync", &err);
    }
    fs::rename(&temp, &path).map_err(|err| LogError::io(&path, "rename", err))?;
    sync_dir(dir);
    Ok(())
}

/// Holds an exclusive `flock` on `<dir>/LOCK` for as long as the returned file is open, so two
/// processes never append to the same log. The kernel drops it when the process dies.
pub fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| LogError::io(&path, "open", err))?;
    // SAFETY: flock only takes the descriptor, which `file` keeps open.
    let code = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if code != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LogError::Locked(dir.to_path_buf()));
        }
        return Err(LogError::io(&path, "lock", err));
    }
    Ok(file)
}

/// An fsync (or a write whose outcome is unknown) failed: the kernel may have dropped the dirty
/// pages, so a retry could report success for data that is gone (the 2018 PostgreSQL "fsyncgate").
/// The only safe answer is to stop and let recovery read what really reached the disk.
pub fn fatal(path: &Path, operation: &str, err: &std::io::Error) -> ! {
    eprintln!(
        "hlc-oracle: FATAL: {operation} of {} failed: {err}; aborting the process (a failed fsync \
         is never retried; recovery on restart reads what reached the disk)",
        path.display()
    );
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_sequence_numbers() {
        assert_eq!(segment_name(1), "0000000000000001.wal");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("1.wal"), None);
        assert_eq!(parse_segment_name("000000000000000g.wal"), None);
        assert!(segment_name(9) < segment_name(10));
        assert!(segment_name(0xff) < segment_name(0x100));
    }
}
