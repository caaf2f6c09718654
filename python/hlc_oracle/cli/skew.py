"""``hlc-oracle skew``: measure this machine's clock offset against NTP servers once, before a
deploy, with the same guard the server runs.

Exit 0 when serving would go on, 1 past the serving limit, 3 when no server answered usably, 2 on
bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from hlc_oracle.cli.options import positive_int, positive_seconds
from hlc_oracle.skew import (
    DEFAULT_MAX_OFFSET_US,
    GuardState,
    SkewConfig,
    SkewMonitor,
    SkewStatus,
)

EXIT_PAST_LIMIT = 1
EXIT_OFFSET_UNKNOWN = 3


def add_parser(commands: Any) -> None:
    skew = commands.add_parser(
        "skew",
        help="measure this machine's clock offset against NTP servers once (before a deploy)",
        description="Query each NTP server once, combine the answers and judge the offset "
        "against the max offset. Exit 0: fine; 1: past the serving level; 3: no usable answer.",
    )
    add_arguments(skew)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="HOST[:PORT]",
        help="NTP server to query (repeat for several)",
    )
    parser.add_argument(
        "--max-offset-us",
        type=int,
        default=DEFAULT_MAX_OFFSET_US,
        help="the clock's max offset in microseconds (default %(default)s)",
    )
    parser.add_argument(
        "--serving-fraction",
        type=float,
        default=SkewConfig.serving_fraction,
        help="fraction of the max offset past which the node would stop serving "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=1.0,
        help="seconds per query, above 0 (default %(default)s)",
    )
    parser.add_argument(
        "--burst",
        type=positive_int,
        default=1,
        help="queries per server, keeping the shortest round trip (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace) -> int:
    """Measures once and prints. Exit 0 when serving would go on, 1 past the serving limit,
    3 when no server answered usably, 2 on bad arguments."""
    try:
        config = SkewConfig(
            servers=tuple(args.server),
            timeout_s=args.timeout,
            burst=args.burst,
            serving_fraction=args.serving_fraction,
            warning_fraction=min(SkewConfig.warning_fraction, args.serving_fraction),
            recovery_hold_s=0,
            # policy and unknown_policy stay the server's defaults, so the status (and --json)
            # shows what a node with these servers would do; the exit code follows the state.
        )
        monitor = SkewMonitor(config, max_offset_us=args.max_offset_us)
    except (TypeError, ValueError) as err:
        print(f"hlc-oracle skew: {err}", file=sys.stderr)
        return 2
    status = monitor.poll_once()
    monitor.stop()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        print(_render(status))
    if status.state is GuardState.UNSAFE:
        return EXIT_PAST_LIMIT
    if status.state is GuardState.UNKNOWN:
        return EXIT_OFFSET_UNKNOWN
    return 0


def _render(status: SkewStatus) -> str:
    lines = [f"{'server':<28} {'status':<14} {'offset us':>12} {'delay us':>10} {'stratum':>7}"]
    for server in status.servers:
        sample = server.last_sample
        if sample is None:
            continue
        offset = f"{sample.offset_us:+d}" if sample.offset_us is not None else "-"
        delay = str(sample.delay_us) if sample.delay_us is not None else "-"
        stratum = str(sample.stratum) if sample.stratum is not None else "-"
        lines.append(
            f"{server.server:<28} {sample.status:<14} {offset:>12} {delay:>10} {stratum:>7}"
        )
        if not sample.healthy:
            lines.append(f"    {sample.detail}")
    estimate = status.estimate
    if estimate is not None:
        lines.append(
            f"offset {estimate.offset_us:+d} us +- {estimate.bound_us} us "
            f"(servers used: {', '.join(estimate.servers)}"
            + (
                f"; falsetickers: {', '.join(estimate.falsetickers)}"
                if estimate.falsetickers
                else ""
            )
            + ")"
        )
    lines.append(
        f"limits: warning {status.warning_level_us} us, serving {status.serving_level_us} us "
        f"(max offset {status.max_offset_us} us)"
    )
    lines.append(f"{status.state}: {status.message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hlc-oracle skew",
        description="Measure this machine's clock offset against NTP servers once.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
