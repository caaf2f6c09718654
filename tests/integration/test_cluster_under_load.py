"""A clustered leader under commit load that keeps meeting the clock's ceiling, beside timestamp
calls: it keeps its lease and its epoch, and answers everything.

The window is made small (20 ms, checked every 5 ms), so group commit keeps running into the
ceiling and raising it while the node's event loop is busy with requests: the raise must neither
wait on a loop from that loop nor hold up the lease's keepalives.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster
from tests.support.steady_load import run_steady_load

#: Long enough that a starved host (2 cores shared with a test suite) stays far from it; the
#: frozen loop this test guards against blocked for 10 s.
LEASE_TTL_S = 6
LOAD_S = 8.0


def test_a_leader_meeting_the_ceiling_under_load_keeps_its_lease(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    small_window = ("--set", "window.size_ms=20", "--set", "window.check_interval_ms=5")
    with OracleCluster(
        tmp_path, etcd.endpoint, size=1, lease_ttl_s=LEASE_TTL_S, extra_args=small_window
    ) as cluster:
        leader = cluster.wait_for_leader()
        epoch = cluster.statuses()[1].epoch
        figures = run_steady_load(
            leader.target, LOAD_S, clustered=True, calls_in_flight=4, per_call=500
        )
        summary = figures.summary()
        assert figures.epochs == {epoch}, summary
        assert figures.batches > 0 and not figures.batch_errors, summary
        assert not figures.timestamp_errors, summary
        # A frozen loop shows as calls that wait out the lease (10 s before the fix); a loaded
        # host's calls do not come near it.
        assert max(figures.timestamp_latencies) < LEASE_TTL_S / 2, summary
        log = leader.log_text()
        assert "stepped down" not in log and "leader key lost" not in log
