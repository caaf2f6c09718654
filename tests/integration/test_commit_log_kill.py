"""CommitLog under kill -9: a writer process appends and prints what was acknowledged, is killed
in the middle of its appends, and every acknowledged record replays."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hlc_oracle import CommitLog

#: The writer process: appends batches of five records, printing the last acknowledged seq.
WRITER = textwrap.dedent(
    """
    import sys
    from hlc_oracle import CommitLog
    log, recovery = CommitLog.open(sys.argv[1], segment_size=4096)
    seq = recovery.next_seq
    print("ready", flush=True)
    while True:
        first, last = log.append([b"r%d" % i for i in range(seq, seq + 5)])
        print(last, flush=True)
        seq = last + 1
    """
)


@pytest.mark.parametrize("round_number", range(3))
def test_every_acknowledged_record_survives_kill_9(tmp_path: Path, round_number: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        acknowledged = 0
        deadline = time.monotonic() + 0.2 + 0.1 * round_number
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert acknowledged > 0
    log, recovery = CommitLog.open(tmp_path, segment_size=4096)
    with log:
        seqs = [seq for seq, _ in recovery.records]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= acknowledged
        assert all(data == b"r%d" % seq for seq, data in recovery.records)
