"""``hlc-oracle cluster``: a local cluster for trying the clustered mode, until Ctrl-C.

One etcd member and three nodes (by default) on 127.0.0.1, each on free ports with a data dir of
its own (see :mod:`hlc_oracle.local_cluster`); prints the targets to give a client, then waits.
Ctrl-C or SIGTERM stops the nodes (the leader hands over), then etcd, and removes the temporary
data; a process that exits meanwhile stops the rest too (exit 1).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hlc_oracle.cli.exit_codes import EXIT_FAILED, EXIT_OK
from hlc_oracle.cli.options import positive_int

#: How often the command looks whether a process exited.
WATCH_INTERVAL_S = 0.2


class StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


def add_parser(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="run a local cluster to try the clustered mode: one etcd member and three nodes on "
        "127.0.0.1, until Ctrl-C",
        description="Start one etcd member (Debian's etcd) and NODES oracle nodes on 127.0.0.1, "
        "print the targets to use, and run until Ctrl-C or SIGTERM, which stop everything.",
    )
    cluster.add_argument(
        "--nodes", type=positive_int, default=3, help="oracle nodes, 1..9 (default %(default)s)"
    )
    cluster.add_argument(
        "--dir",
        type=Path,
        help="keep the data dirs and logs here (default: a temporary directory, removed at the "
        "end)",
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise StopRequestedError(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    from hlc_oracle.local_cluster import LocalCluster, LocalClusterError

    if args.nodes > 9:
        raise ValueError(f"--nodes must be in 1..9, got {args.nodes}")
    previous = {
        signum: signal.signal(signum, _stop_on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    cluster = LocalCluster(args.nodes, args.dir, say=_say)
    code = EXIT_OK
    try:
        cluster.start()
        targets = cluster.targets
        _say(f"targets        {targets}")
        _say("")
        _say("Try:")
        _say(f"  hlc-oracle now --target {targets}")
        _say(f"  hlc-oracle status --target {targets}")
        _say("Stop a node's process (kill PID) to watch another take over; Ctrl-C stops all.")
        while (exited := cluster.exited()) is None:
            time.sleep(WATCH_INTERVAL_S)
        print(
            f"hlc-oracle cluster: {exited.name} exited with {exited.exit_code()} (log "
            f"{exited.log_path}); stopping the rest",
            file=sys.stderr,
        )
        code = EXIT_FAILED
    except StopRequestedError:
        pass
    except LocalClusterError as err:
        print(f"hlc-oracle cluster: {err}", file=sys.stderr)
        code = EXIT_FAILED
    finally:
        for signum in previous:  # a second Ctrl-C must not cut the stop short
            signal.signal(signum, signal.SIG_IGN)
        _say("stopping the nodes, then etcd")
        cluster.stop()
        _say("stopped")
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
