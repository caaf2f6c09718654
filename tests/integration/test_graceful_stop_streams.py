"""A graceful stop (SIGTERM) with streams open: each open ``CommitStream`` and
``StreamTimestamps`` is ended with a refusal the client retries elsewhere (``UNAVAILABLE`` with
the usual refusal metadata), so the node exits at once instead of waiting out its shutdown grace,
and logs no traceback."""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from hlc_oracle.proto import REFUSAL_METADATA_KEY, REFUSAL_NOT_LEADER
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster

#: Far longer than the stop may take: a stream that holds the stop shows as a wait this long.
SHUTDOWN_GRACE_S = 10


def open_stream(
    channel: grpc.Channel, method: str, sent: queue.Queue[bytes | None]
) -> Iterator[bytes]:
    def requests() -> Iterator[bytes]:
        while (item := sent.get()) is not None:
            yield item

    return channel.stream_stream(method)(requests(), timeout=30)  # type: ignore[no-any-return]


def test_sigterm_ends_open_streams_at_once(tmp_path: Path, etcd: EtcdMember) -> None:
    with OracleCluster(
        tmp_path,
        etcd.endpoint,
        size=1,
        extra_args=("--shutdown-grace", str(SHUTDOWN_GRACE_S)),
    ) as cluster:
        leader = cluster.wait_for_leader()
        start = pb.GetTimestampsResponse()
        with grpc.insecure_channel(leader.target) as channel:
            stamps: queue.Queue[bytes | None] = queue.Queue()
            timestamps = open_stream(
                channel, "/hlc_oracle.v1.TimestampOracle/StreamTimestamps", stamps
            )
            stamps.put(pb.GetTimestampsRequest(count=1).SerializeToString())
            start = pb.GetTimestampsResponse.FromString(next(timestamps))
            commits: queue.Queue[bytes | None] = queue.Queue()
            stream = open_stream(channel, "/hlc_oracle.v1.Transactions/CommitStream", commits)
            txn = pb.Transaction(txn_id=1, start_ts=start.first, write_set=[b"k"])
            commits.put(pb.CommitStreamRequest(transactions=[txn]).SerializeToString())
            answer = pb.CommitStreamResponse.FromString(next(stream))
            assert answer.results[0].HasField("commit_ts")
            # Both streams are open and idle: the client sends nothing more.
            signalled = time.monotonic()
            leader.signal(signal.SIGTERM)
            assert leader.process is not None
            code = leader.process.wait(timeout=SHUTDOWN_GRACE_S + 10)
            took = time.monotonic() - signalled
            for ended in (stream, timestamps):
                try:
                    next(ended)
                    raise AssertionError("the stream went on after the stop")
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err  # type: ignore[attr-defined]
                    metadata = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
                    # A clustered node that resigned names no leader: clients try the others.
                    assert metadata.get(REFUSAL_METADATA_KEY) == REFUSAL_NOT_LEADER, metadata
            commits.put(None)
            stamps.put(None)
        assert code == 0
        assert took < SHUTDOWN_GRACE_S / 2, f"the stop waited {took:.1f} s for the open streams"
        log = leader.log_text()
        assert '"message": "stopped"' in log
        assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
