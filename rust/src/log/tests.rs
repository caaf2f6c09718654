//! End-to-end tests of the log on real files: append, rotate, reopen, damage, checkpoint.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "hlc-log-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn options(segment_size: u64) -> LogOptions {
    LogOptions {
        segment_size,
        preallocate: true,
    }
}

type Replayed = Vec<(u64, Vec<u8>)>;

/// Opens the log and collects what recovery replayed.
fn open(dir: &Path, segment_size: u64) -> Result<(CommitLog, Replayed, Recovered), LogError> {
    let mut seen = Vec::new();
    let (log, recovered) = CommitLog::open(dir, options(segment_size), &mut |seq, payload| {
        seen.push((seq, payload.to_vec()));
    })?;
    Ok((log, seen, recovered))
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:05}-{}", "x".repeat((i % 23) as usize)).into_bytes()
}

/// Appends records `1..=count` in batches of `batch`.
fn fill(log: &mut CommitLog, count: u64, batch: u64) {
    let mut i = 1;
    while i <= count {
        let end = (i + batch - 1).min(count);
        let payloads: Vec<Vec<u8>> = (i..=end).map(payload).collect();
        assert_eq!(log.append(&payloads, true).unwrap(), Some((i, end)));
        i = end + 1;
    }
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, payload(i))).collect()
}

#[test]
fn appended_records_are_replayed_in_order_after_reopen() {
    let dir = TempDir::new("reopen");
    {
        let (mut log, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        assert!(seen.is_empty());
        assert_eq!(recovered.stats.records, 0);
        assert_eq!(log.next_seq(), 1);
        fill(&mut log, 100, 7);
        assert_eq!(log.append::<&[u8]>(&[], true).unwrap(), None);
    }
    let (mut log, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen, expected(1..=100));
    assert_eq!(recovered.stats.records, 100);
    assert_eq!(recovered.stats.truncated_bytes, 0);
    assert_eq!(log.next_seq(), 101);
    assert_eq!(log.append(&[b"more"], true).unwrap(), Some((101, 101)));
}

#[test]
fn segments_rotate_by_size_and_replay_across_them() {
    let dir = TempDir::new("rotate");
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 300, 5);
        assert!(log.segment_paths().len() > 5);
        // A batch larger than a whole segment goes into one segment of its own.
        let big = vec![vec![7u8; 600], vec![8u8; 600]];
        log.append(&big, true).unwrap();
    }
    let (log, seen, recovered) = open(&dir.0, 1024).unwrap();
    assert_eq!(seen.len(), 302);
    assert_eq!(seen[..300], expected(1..=300)[..]);
    assert_eq!(seen[301], (302, vec![8u8; 600]));
    assert_eq!(recovered.stats.segments, log.segment_paths().len());
    for (seq, path) in &recovered.segments {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("{seq:016x}.wal"));
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths.pop().unwrap()
}

/// End of the written data in a preallocated segment.
fn written_len(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).unwrap() + 1
}

#[test]
fn torn_tail_of_last_segment_is_truncated_and_appending_resumes() {
    let dir = TempDir::new("torn");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 20, 4);
    }
    let path = last_segment(&dir.0);
    let end = written_len(&path);
    // Cut the last record in half, as a crash in the middle of its write would.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((end - 5) as u64).unwrap();
    drop(file);

    {
        let (mut log, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(seen, expected(1..=19));
        assert!(recovered.stats.truncated_bytes > 0);
        assert_eq!(recovered.stats.truncated_at.as_ref().unwrap().0, path);
        assert_eq!(log.next_seq(), 20);
        log.append(&[b"after-repair"], true).unwrap();
    }
    let (_, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[19], (20, b"after-repair".to_vec()));
    assert_eq!(recovered.stats.truncated_bytes, 0);
}

#[test]
fn flipped_bytes_in_the_last_records_are_truncated() {
    let dir = TempDir::new("flip-tail");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 30, 10);
    }
    let path = last_segment(&dir.0);
    let end = written_len(&path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[end - 3] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (_, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen, expected(1..=29));
    assert!(recovered.stats.truncated_bytes > 0);
}

#[test]
fn damage_in_an_earlier_segment_refuses_to_open_naming_file_and_offset() {
    let dir = TempDir::new("flip-early");
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 200, 3);
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    let victim = &paths[1];
    let mut bytes = fs::read(victim).unwrap();
    let at = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 2; // inside the first record's payload
    bytes[at] ^= 0x01;
    fs::write(victim, &bytes).unwrap();

    match open(&dir.0, 1024) {
        Err(LogError::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, victim);
            assert_eq!(offset, SEGMENT_HEADER_LEN as u64);
            let message = open(&dir.0, 1024).err().unwrap().to_string();
            assert!(message.contains(victim.to_str().unwrap()), "{message}");
            assert!(
                message.contains(&format!("offset {SEGMENT_HEADER_LEN}")),
                "{message}"
            );
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = TempDir::new("gap");
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 200, 3);
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    fs::remove_file(&paths[2]).unwrap();
    assert!(matches!(
        open(&dir.0, 1024),
        Err(LogError::Corrupt { path, offset: 0, .. }) if path == paths[3]
    ));
}

#[test]
fn damaged_header_and_damaged_checkpoint_are_corruption() {
    let dir = TempDir::new("header");
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 10, 2);
        log.checkpoint(5, b"state").unwrap();
    }
    let checkpoint = dir.0.join("checkpoint");
    let good = fs::read(&checkpoint).unwrap();
    let mut bad = good.clone();
    bad[35] ^= 4;
    fs::write(&checkpoint, &bad).unwrap();
    assert!(
        matches!(open(&dir.0, 1024), Err(LogError::Corrupt { path, .. }) if path == checkpoint)
    );
    fs::write(&checkpoint, &good).unwrap();

    let segment = last_segment(&dir.0);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[3] ^= 1;
    fs::write(&segment, &bytes).unwrap();
    assert!(matches!(
        open(&dir.0, 1024),
        Err(LogError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn checkpoint_retires_covered_segments_and_replay_starts_after_it() {
    let dir = TempDir::new("checkpoint");
    let before;
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 200, 4);
        before = log.segment_paths().len();
        assert!(log.checkpoint(log.next_seq(), b"too far").is_err());
        let removed = log.checkpoint(150, b"snapshot-at-150").unwrap();
        assert!(removed > 0);
        assert_eq!(log.segment_paths().len(), before - removed);
        // The segment holding 150 is kept: it also holds later records.
        for path in log.segment_paths() {
            assert!(path.exists());
        }
    }
    let (log, seen, recovered) = open(&dir.0, 1024).unwrap();
    assert_eq!(
        recovered.checkpoint,
        Some((150, b"snapshot-at-150".to_vec()))
    );
    assert_eq!(seen, expected(151..=200));
    assert_eq!(log.next_seq(), 201);
    assert!(log.segment_paths().len() < before);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let (_log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert!(matches!(
        open(&dir.0, DEFAULT_SEGMENT_SIZE),
        Err(LogError::Locked(_))
    ));
}

#[test]
fn leftover_temp_files_are_removed_and_bad_options_refused() {
    let dir = TempDir::new("temp");
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join("0000000000000009.wal.tmp"), b"half-made").unwrap();
    {
        let (_log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    }
    assert!(!dir.0.join("0000000000000009.wal.tmp").exists());
    assert!(matches!(open(&dir.0, 10), Err(LogError::InvalidOption(_))));
}

#[test]
fn oversized_record_is_refused_without_writing() {
    let dir = TempDir::new("oversize");
    let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    let huge = vec![0u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        log.append(&[huge], true),
        Err(LogError::RecordTooLarge(_))
    ));
    assert_eq!(log.next_seq(), 1);
}

#[test]
fn unsynced_appends_become_durable_on_sync() {
    let dir = TempDir::new("async");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        log.append(&[b"a", b"b"], false).unwrap();
        log.sync();
    }
    let (_, seen, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen.len(), 2);
}

/// `(seq, offset)` of every record of a healthy segment file.
fn record_offsets(path: &Path) -> Vec<(u64, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut decoder = SegmentDecoder::new(&bytes).unwrap();
    let mut offsets = Vec::new();
    while let Some(record) = decoder.next_record().unwrap() {
        offsets.push((record.seq, record.offset as usize));
    }
    offsets
}

/// Flips one payload byte of record `seq` in the last segment; returns the record's offset.
fn damage_record(dir: &Path, seq: u64) -> u64 {
    let path = last_segment(dir);
    let (_, at) = record_offsets(&path)
        .into_iter()
        .find(|&(s, _)| s == seq)
        .unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[at + FRAME_HEADER_LEN + 1] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    at as u64
}

#[test]
fn damage_followed_by_a_later_synced_batch_in_the_last_segment_refuses_to_open() {
    let dir = TempDir::new("flip-mid-last");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 30, 10); // synced batches 1..=10, 11..=20, 21..=30
    }
    let at = damage_record(&dir.0, 5);
    let damaged = fs::read(last_segment(&dir.0)).unwrap();
    match open(&dir.0, DEFAULT_SEGMENT_SIZE) {
        Err(err @ LogError::Corrupt { .. }) => {
            let LogError::Corrupt { offset, .. } = &err else {
                unreachable!()
            };
            assert_eq!(*offset, at);
            let message = err.to_string();
            assert!(message.contains("record 11"), "{message}");
            assert!(message.contains("acknowledged"), "{message}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    // Refusing changed nothing: the records after the damage are still there to be rescued.
    assert_eq!(fs::read(last_segment(&dir.0)).unwrap(), damaged);
}

#[test]
fn a_torn_last_batch_is_truncated_even_when_its_later_records_reached_the_disk() {
    let dir = TempDir::new("torn-group");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 20, 10); // synced batches 1..=10 and 11..=20
    }
    // A crash can write a batch's pages out of order: record 12 lost, 13..=20 on disk.
    let at = damage_record(&dir.0, 12);
    let (log, seen, recovered) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen, expected(1..=11));
    assert_eq!(log.next_seq(), 12);
    assert_eq!(recovered.stats.truncated_at.unwrap().1, at);
}

#[test]
fn unsynced_appends_share_one_sync_group_with_the_batch_that_syncs_them() {
    let dir = TempDir::new("unsynced-group");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 4, 4);
        log.append(&[payload(5), payload(6)], false).unwrap();
        log.append(&[payload(7), payload(8)], true).unwrap();
    }
    // 5..=8 were written after the same fdatasync: damage to 5 with 7 intact is a torn write.
    damage_record(&dir.0, 5);
    let (_, seen, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen, expected(1..=4));
}

#[test]
fn segments_left_behind_by_an_interrupted_checkpoint_are_removed_on_open() {
    let dir = TempDir::new("checkpoint-leftovers");
    let saved: Vec<(PathBuf, Vec<u8>)>;
    {
        let (mut log, _, _) = open(&dir.0, 1024).unwrap();
        fill(&mut log, 200, 4);
        saved = log
            .segment_paths()
            .iter()
            .map(|p| (p.clone(), fs::read(p).unwrap()))
            .collect();
        assert!(log.checkpoint(150, b"snapshot-at-150").unwrap() > 1);
    }
    // A crash after the checkpoint's rename, before its removals reached the disk.
    let mut restored = 0;
    for (path, bytes) in &saved {
        if !path.exists() {
            fs::write(path, bytes).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 1);
    let (log, seen, recovered) = open(&dir.0, 1024).unwrap();
    assert_eq!(seen, expected(151..=200));
    assert_eq!(recovered.checkpoint.unwrap().0, 150);
    assert_eq!(log.next_seq(), 201);
    let left = saved.iter().filter(|(path, _)| path.exists()).count();
    assert_eq!(left, saved.len() - restored);
}

#[test]
fn a_sync_on_another_thread_covers_only_what_was_written_before_it_began() {
    let dir = TempDir::new("sync-point");
    {
        let (mut log, _, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
        fill(&mut log, 4, 4);
        assert!(log.sync_point().is_none(), "everything is synced");
        log.append(&[payload(5), payload(6)], false).unwrap();
        let point = log.sync_point().unwrap();
        assert_eq!(point.through_seq, 6);
        // Written while that sync runs: 7 and 8 stay in a sync group that starts at 7, and 9
        // (after the sync completed) joins it.
        log.append(&[payload(7), payload(8)], false).unwrap();
        let took = std::thread::scope(|scope| scope.spawn(|| point.sync()).join().unwrap());
        log.synced(&point, took);
        log.append(&[payload(9)], false).unwrap();
        assert_eq!(log.sync_point().unwrap().through_seq, 9);
        assert!(log.sync_timings().count() >= 2);
    }
    // Damage to 7 with 9 intact: 7..=9 were never synced together, so a torn write, not damage.
    damage_record(&dir.0, 7);
    let (_, seen, _) = open(&dir.0, DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(seen, expected(1..=6));
}
