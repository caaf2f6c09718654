"""CommitLog on real files: replay, rotation, retention, damage, bad input (kill -9 of a writer:
``tests/integration/test_commit_log_kill.py``)."""

from pathlib import Path

import pytest
from hlc_oracle import CommitLog, CommitLogCorruptError, CommitLogError, HlcError


def payload(i: int) -> bytes:
    return f"record-{i:05d}-".encode() + b"x" * (i % 17)


def fill(log: CommitLog, first: int, last: int, batch: int) -> None:
    for start in range(first, last + 1, batch):
        end = min(start + batch - 1, last)
        assert log.append([payload(i) for i in range(start, end + 1)]) == (start, end)


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def written_end(segment: Path) -> int:
    data = segment.read_bytes()
    return len(data.rstrip(b"\0"))


def test_records_are_replayed_in_order_after_reopen(tmp_path: Path) -> None:
    log, recovery = CommitLog.open(tmp_path)
    assert recovery.records == []
    assert recovery.next_seq == log.next_seq == 1
    with log:
        fill(log, 1, 50, 8)
        assert log.append([]) is None
    assert log.closed

    log, recovery = CommitLog.open(tmp_path)
    with log:
        assert recovery.records == [(i, payload(i)) for i in range(1, 51)]
        assert recovery.record_count == 50
        assert recovery.truncated_bytes == 0 and recovery.truncated_at is None
        assert recovery.checkpoint is None
        assert log.next_seq == 51
        assert log.append([b"again"], sync=False) == (51, 51)
        log.sync()


def test_rotation_and_checkpoint_retention(tmp_path: Path) -> None:
    log, _ = CommitLog.open(tmp_path, segment_size=2048)
    with log:
        fill(log, 1, 400, 6)
        before = len(log.segment_paths())
        assert before > 3
        removed = log.checkpoint(300, b"state-at-300")
        assert removed > 0
        assert len(log.segment_paths()) == before - removed == len(segments(tmp_path))
    log, recovery = CommitLog.open(tmp_path, segment_size=2048)
    with log:
        assert recovery.checkpoint == (300, b"state-at-300")
        assert recovery.records == [(i, payload(i)) for i in range(301, 401)]


def test_torn_tail_of_last_segment_is_truncated(tmp_path: Path) -> None:
    log, _ = CommitLog.open(tmp_path)
    with log:
        fill(log, 1, 30, 5)
    last = segments(tmp_path)[-1]
    end = written_end(last)
    with open(last, "r+b") as handle:
        handle.truncate(end - 4)

    log, recovery = CommitLog.open(tmp_path)
    with log:
        assert recovery.records == [(i, payload(i)) for i in range(1, 30)]
        assert recovery.truncated_bytes > 0
        assert recovery.truncated_at is not None
        assert recovery.truncated_at[0] == str(last)
        assert log.append([b"resumed"]) == (30, 30)
    log, recovery = CommitLog.open(tmp_path)
    with log:
        assert recovery.records[-1] == (30, b"resumed")
        assert recovery.truncated_bytes == 0


def test_flipped_bytes_at_the_tail_of_last_segment_are_truncated(tmp_path: Path) -> None:
    log, _ = CommitLog.open(tmp_path)
    with log:
        fill(log, 1, 12, 3)
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[written_end(last) - 2] ^= 0xFF
    last.write_bytes(bytes(data))
    log, recovery = CommitLog.open(tmp_path)
    with log:
        assert [seq for seq, _ in recovery.records] == list(range(1, 12))
        assert recovery.truncated_bytes > 0


def test_damage_in_an_earlier_segment_refuses_to_start(tmp_path: Path) -> None:
    log, _ = CommitLog.open(tmp_path, segment_size=1024)
    with log:
        fill(log, 1, 200, 4)
    victim = segments(tmp_path)[1]
    data = bytearray(victim.read_bytes())
    data[32 + 20 + 3] ^= 0x01  # inside the first record's payload (header 32, frame header 20)
    victim.write_bytes(bytes(data))
    with pytest.raises(CommitLogCorruptError) as raised:
        CommitLog.open(tmp_path, segment_size=1024)
    message = str(raised.value)
    assert str(victim) in message
    assert "offset 32" in message
    assert isinstance(raised.value, CommitLogError) and isinstance(raised.value, HlcError)


def test_damage_before_later_synced_batches_in_the_last_segment_refuses_to_start(
    tmp_path: Path,
) -> None:
    """Only the last sync group can be torn: a bad record followed by a batch written after a
    later fdatasync was acknowledged, so start-up stops instead of cutting it off."""
    log, _ = CommitLog.open(tmp_path)
    with log:
        fill(log, 1, 30, 10)
    (last,) = segments(tmp_path)
    data = bytearray(last.read_bytes())
    fifth = data.index(payload(5))
    data[fifth + 2] ^= 0x01
    last.write_bytes(bytes(data))
    with pytest.raises(CommitLogCorruptError, match=r"record 11 at offset \d+ was written after"):
        CommitLog.open(tmp_path)
    assert last.read_bytes() == bytes(data)  # nothing was cut


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    log, _ = CommitLog.open(tmp_path)
    with log, pytest.raises(CommitLogError, match="in use by another process"):
        CommitLog.open(tmp_path)
    # Closing releases the lock.
    again, _ = CommitLog.open(tmp_path)
    again.close()


def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        CommitLog.open(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_size must be at least 1024"):
        CommitLog.open(tmp_path / "small", segment_size=100)
    with pytest.raises(ValueError, match="segment_size must be a non-negative"):
        CommitLog.open(tmp_path / "negative", segment_size=-1)
    log, _ = CommitLog.open(tmp_path / "log")
    with log:
        with pytest.raises(TypeError, match="wrap one record in a list"):
            log.append(b"not-a-list")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"records\[1\] must be bytes, got str"):
            log.append([b"ok", "text"])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="iterable of bytes"):
            log.append(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="over the limit"):
            log.append([b"\0" * ((64 << 20) + 1)])
        assert log.next_seq == 1
        with pytest.raises(ValueError, match="covered_seq must be below next_seq=1"):
            log.checkpoint(1, b"")
        with pytest.raises(ValueError, match="covered_seq must be a non-negative"):
            log.checkpoint(-1, b"")
        with pytest.raises(TypeError, match="data must be bytes"):
            log.checkpoint(0, "text")  # type: ignore[arg-type]
    with pytest.raises(CommitLogError, match="closed"):
        log.append([b"late"])
    _, recovery = CommitLog.open(tmp_path / "log")
    assert recovery.records == []
