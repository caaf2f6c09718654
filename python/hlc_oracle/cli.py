"""The ``hlc-oracle`` command: ``serve``, ``now``, ``status``, ``txn``, ``skew``, ``bench``.

Exit codes: 0 success; 1 the oracle failed the request or could not start (``txn status``: the
transaction aborted; ``status``: the node is not serving); 2 bad usage or configuration,
including a ``--count`` above the server's ``max_count``; 3 the oracle could not be reached
(``UNAVAILABLE`` from the network after retries, or timeout); 4 ``txn status``: the id is
unknown; 5 the oracle was reached and refused: not serving (starting, shutting down, clock skew;
its reason is printed) or overloaded (``RESOURCE_EXHAUSTED``: too many calls, commit queue full);
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from hlc_oracle import Aborted, Committed, Transaction
from hlc_oracle import config as config_module
from hlc_oracle.client import (
    AsyncOracleClient,
    OracleClient,
    OracleError,
    OracleNotServingError,
    OracleTimeoutError,
    OracleUnavailableError,
    RetryPolicy,
    channel_credentials,
)
from hlc_oracle.proto import REFUSAL_OVER_LIMIT
from hlc_oracle.skew import add_skew_arguments, run_skew

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN = 4
EXIT_REFUSED = 5
EXIT_INTERRUPTED = 130


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file (also HLC_ORACLE_CONFIG); "
        "flags > HLC_ORACLE_* env > file > defaults",
    )
    defaults = config_module.OracleConfig()
    for section_name, section in config_module.sections(defaults):
        for f in config_module.fields_of(section):
            flag = f.metadata.get("flag")
            if not flag:
                continue
            env = config_module.environment_variable(section_name, f.name)
            parser.add_argument(
                flag,
                dest=f"{section_name}.{f.name}",
                metavar=f.name.upper(),
                help=f"{f.metadata['doc']} (default {getattr(section, f.name)!r}; {env})",
            )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="any setting, e.g. --set window.size_ms=5000 (see the example config in deploy/)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    for item in args.set:
        key, equals, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not equals or not dot:
            raise config_module.ConfigError(f"--set takes SECTION.FIELD=VALUE, got {item!r}")
        overrides.setdefault(section, {})[name] = value
    return overrides


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default="127.0.0.1:50051", help="oracle address host:port (default %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per call (default %(default)s)"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="attempts on UNAVAILABLE (default %(default)s)"
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA bundle: connect with TLS")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM client key (mutual TLS)")


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    credentials = None
    if (args.tls_cert is None) != (args.tls_key is None):
        given, missing = (
            ("--tls-cert", "--tls-key") if args.tls_key is None else ("--tls-key", "--tls-cert")
        )
        raise config_module.ConfigError(
            f"{given} needs {missing} (mutual TLS takes the client certificate and its key)"
        )
    if args.tls_ca is not None or args.tls_cert is not None:
        try:
            credentials = channel_credentials(args.tls_ca, args.tls_key, args.tls_cert)
        except OSError as err:
            raise config_module.ConfigError(err.strerror or str(err)) from err
        except ValueError as err:
            raise config_module.ConfigError(str(err)) from err
    if args.retries < 1:
        raise config_module.ConfigError(f"--retries must be at least 1, got {args.retries}")
    return {
        "timeout": args.timeout,
        "retry": RetryPolicy(attempts=args.retries),
        "credentials": credentials,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hlc-oracle",
        description="Hybrid-logical-clock timestamp oracle: serve it, or ask one for timestamps.",
        epilog="Exit codes: 0 ok; 1 request failed or server could not start (txn status: "
        "aborted; status: not serving); 2 bad usage or configuration (also a count above the "
        "server's max_count); 3 oracle unreachable or timed out; 4 txn status: unknown id; "
        "5 oracle reached but refused (not serving, or overloaded); 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run an oracle node (no arguments: the embedded default on 127.0.0.1:50051)",
        description="Run one oracle node until SIGTERM/SIGINT (graceful shutdown, exit 0).",
    )
    _serve_arguments(serve)

    now = commands.add_parser("now", help="print timestamps from an oracle")
    now.add_argument("--count", type=int, default=1, help="how many (default %(default)s)")
    now.add_argument("--json", action="store_true", help="print JSON")
    _client_arguments(now)

    status = commands.add_parser("status", help="print an oracle's status")
    status.add_argument("--json", action="store_true", help="print JSON")
    _client_arguments(status)

    txn = commands.add_parser(
        "txn", help="transactions: the decision on a transaction id, or abort one"
    )
    txn_commands = txn.add_subparsers(dest="txn_command", required=True, metavar="ACTION")
    for action, text in (
        ("status", "print the decision on ID: committed (with its timestamp), aborted, unknown"),
        (
            "abort",
            "abort ID if undecided (a late commit of it is then refused); print the decision",
        ),
    ):
        sub = txn_commands.add_parser(action, help=text)
        sub.add_argument("txn_id", type=int, metavar="ID", help="transaction id, 1..2**64-1")
        sub.add_argument("--json", action="store_true", help="print JSON")
        _client_arguments(sub)

    skew = commands.add_parser(
        "skew",
        help="measure this machine's clock offset against NTP servers once (before a deploy)",
        description="Query each NTP server once, combine the answers and judge the offset "
        "against the max offset. Exit 0: fine; 1: past the serving level; 3: no usable answer.",
    )
    add_skew_arguments(skew)

    bench = commands.add_parser(
        "bench", help="load generator: throughput and latency percentiles of an oracle"
    )
    bench.add_argument(
        "--mode",
        choices=("merged", "ranges", "unary", "commit"),
        default="merged",
        help="merged: concurrent get_timestamp() callers (merged by the client); ranges: "
        "get_timestamps(--count) callers (merged too); unary: one GetTimestamps call of --count "
        "per request; commit: concurrent commit() callers (group commit, --keys keys per "
        "transaction, disjoint) (default %(default)s)",
    )
    bench.add_argument(
        "--keys", type=int, default=8, help="keys per transaction in commit mode (half read)"
    )
    bench.add_argument("--concurrency", type=int, default=64, help="callers (default %(default)s)")
    bench.add_argument(
        "--count",
        type=int,
        help="timestamps per request in ranges and unary modes (default 1; refused in merged "
        "and commit modes, whose requests are one timestamp or transaction each)",
    )
    bench.add_argument(
        "--requests", type=int, default=100_000, help="calls in all (default %(default)s)"
    )
    bench.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="stop after this many seconds at most, > 0 (default %(default)s)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _client_arguments(bench)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from hlc_oracle.server import StartupError, serve
    from hlc_oracle.server.logs import configure
    from hlc_oracle.server.window import WindowFileError

    config = config_module.load(args.config, overrides=_overrides(args))
    configure(config.log.level, config.log.format)
    try:
        fatal_reason = asyncio.run(serve(config))
    except (StartupError, WindowFileError) as err:
        print(f"hlc-oracle serve: {err}", file=sys.stderr)
        return EXIT_FAILED
    if fatal_reason is not None:
        print(f"hlc-oracle serve: stopped: {fatal_reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_now(args: argparse.Namespace) -> int:
    with OracleClient(args.target, **_client_kwargs(args)) as client:
        if args.count == 1:
            timestamps = [client.get_timestamp()]
        else:
            timestamps = list(client.get_timestamps(args.count))
    if args.json:
        print(
            json.dumps(
                [
                    {"physical": t.physical, "logical": t.logical, "node": t.node, "text": str(t)}
                    for t in timestamps
                ]
            )
        )
    else:
        for ts in timestamps:
            print(ts)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with OracleClient(args.target, **_client_kwargs(args)) as client:
        status = client.status()
    fields = {
        f.name: getattr(status, f.name) for f in dataclasses.fields(status) if f.name != "message"
    }
    fields["last_timestamp"] = str(status.last_timestamp)
    if args.json:
        print(json.dumps(fields))
    else:
        servers = fields.pop("ntp_servers")
        width = max(len(name) for name in fields)
        for name, value in fields.items():
            print(f"{name:<{width}}  {value}")
        for server in servers:
            figures = (
                f"offset {server['offset_us']:+d} us, delay {server['delay_us']} us, "
                f"stratum {server['stratum']}"
                if "offset_us" in server
                else "no good answer yet"
            )
            print(
                f"{'ntp ' + server['server']:<{width}}  {server['last_status']}: {figures} "
                f"({server['good_samples']} good, {server['unhealthy_samples']} unhealthy)"
            )
    return EXIT_OK if status.serving else EXIT_FAILED


class ProgressBar:
    """A one-line progress bar on a terminal stream (nothing when disabled)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0

    def update(self, done: int, started: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * 30)
        rate = done / max(now - started, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {rate:,.0f} calls/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(int(fraction * len(sorted_values)), len(sorted_values) - 1)
    return sorted_values[index]


def bench_count(args: argparse.Namespace) -> int:
    """``--count`` as the timestamps each call asks for; ``ConfigError`` where it means nothing."""
    if args.count is None:
        return 1
    if args.mode in ("merged", "commit"):
        raise config_module.ConfigError(
            f"--count applies to --mode ranges and unary only; each {args.mode} call is one "
            + ("timestamp" if args.mode == "merged" else "transaction")
        )
    if args.count < 1:
        raise config_module.ConfigError(f"--count must be at least 1, got {args.count}")
    return int(args.count)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the load; returns calls, timestamps, seconds, throughput and latency percentiles."""
    count = bench_count(args)
    if args.concurrency < 1 or args.requests < 1:
        raise config_module.ConfigError("--concurrency and --requests must be at least 1")
    if not args.duration > 0 or args.duration == float("inf"):
        raise config_module.ConfigError(
            f"--duration must be a finite number of seconds above 0, got {args.duration}"
        )
    latencies: list[float] = []
    issued = 0
    deadline = time.perf_counter() + args.duration
    progress = ProgressBar(args.requests, sys.stderr, not args.no_progress and sys.stderr.isatty())
    async with AsyncOracleClient(args.target, **_client_kwargs(args)) as client:
        await client.status()  # fail fast, and open the connection outside the timing

        # Commit mode: ids unique to this run; every transaction reads and writes its own keys,
        # so all of them commit and the figure is the group commit's, not the conflict rate's.
        run_id = time.time_ns() & 0xFFFF_FFFF
        start = await client.get_timestamp() if args.mode == "commit" else None
        reads = max(args.keys // 2, 0)
        writes = max(args.keys - reads, 1)

        async def caller() -> None:
            nonlocal issued
            while issued < args.requests and time.perf_counter() < deadline:
                issued += 1
                started = time.perf_counter()
                if args.mode == "merged":
                    await client.get_timestamp()
                elif args.mode == "commit":
                    assert start is not None
                    txn_id = (run_id << 32) | issued
                    keys = [b"%d/%d" % (txn_id, k) for k in range(reads + writes)]
                    outcome = await client.commit(
                        Transaction(txn_id, start, keys[:reads], keys[reads:])
                    )
                    if not isinstance(outcome, Committed):
                        raise OracleError(grpc.StatusCode.INTERNAL, f"unexpected {outcome!r}")
                elif args.mode == "ranges":
                    await client.get_timestamps(count)
                else:
                    await client.get_timestamps_unary(count)
                latencies.append(time.perf_counter() - started)
                progress.update(len(latencies), begin)

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - begin
        progress.update(len(latencies), begin, force=True)
        progress.finish()
        batches = client.commit_batches if args.mode == "commit" else client.batches
    latencies.sort()
    return {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "calls": len(latencies),
        "timestamps": len(latencies) * count,
        "seconds": round(elapsed, 3),
        "calls_per_second": round(len(latencies) / elapsed),
        "timestamps_per_second": round(len(latencies) * count / elapsed),
        "merged_requests": batches,
        "latency_us": {
            name: round(percentile(latencies, q) * 1e6, 1) if latencies else None
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
    }


def outcome_fields(txn_id: int, outcome: Committed | Aborted | None) -> dict[str, Any]:
    if outcome is None:
        return {"txn_id": txn_id, "status": "unknown"}
    if isinstance(outcome, Committed):
        return {"txn_id": txn_id, "status": "committed", "commit_ts": str(outcome.commit_ts)}
    fields: dict[str, Any] = {"txn_id": txn_id, "status": "aborted", "reason": outcome.reason}
    conflict = outcome.conflict
    if conflict is not None:
        fields["conflict"] = {
            "kind": str(conflict.kind).rsplit(".", 1)[-1].lower(),
            "key": conflict.key.decode("utf-8", "backslashreplace") if conflict.key else None,
            "commit_ts": str(conflict.commit_ts) if conflict.commit_ts else None,
            "winner_txn_id": conflict.winner_txn_id,
        }
    return fields


def cmd_txn(args: argparse.Namespace) -> int:
    """``txn status ID``: exit 0 committed, 1 aborted, 4 unknown; ``txn abort ID``: the decision."""
    with OracleClient(args.target, **_client_kwargs(args)) as client:
        if args.txn_command == "status":
            outcome = client.transaction_status(args.txn_id)
        else:
            outcome = client.abort(args.txn_id)
    fields = outcome_fields(args.txn_id, outcome)
    if args.json:
        print(json.dumps(fields))
    else:
        line = f"transaction {args.txn_id}: {fields['status']}"
        if "commit_ts" in fields:
            line += f" at {fields['commit_ts']}"
        if "reason" in fields:
            line += f" ({fields['reason']})"
        conflict = fields.get("conflict")
        if conflict:
            lost_to = (
                f"commit {conflict['commit_ts']}"
                if conflict["commit_ts"]
                else f"transaction {conflict['winner_txn_id']}"
            )
            line += f": {conflict['kind']} on key {conflict['key']!r}, lost to {lost_to}"
        print(line)
    if outcome is None:
        return EXIT_UNKNOWN
    return EXIT_OK if isinstance(outcome, Committed) else EXIT_FAILED


def cmd_bench(args: argparse.Namespace) -> int:
    result = asyncio.run(run_bench(args))
    latency = result["latency_us"]
    if result["mode"] == "commit":
        print(
            f"{result['calls']} committed transactions in {result['seconds']} s: "
            f"{result['calls_per_second']:,} commits/s "
            f"({result['merged_requests']} CommitStream messages)"
        )
    else:
        print(
            f"{result['calls']} calls ({result['timestamps']} timestamps) in "
            f"{result['seconds']} s: {result['calls_per_second']:,} calls/s, "
            f"{result['timestamps_per_second']:,} timestamps/s"
        )
    print(
        f"latency us: p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  "
        f"max {latency['max']}"
    )
    print(json.dumps(result))
    return EXIT_OK


def exit_code_of(err: OracleError) -> int:
    """The exit code of a status the oracle answered with (not ``UNAVAILABLE``/timeouts)."""
    if err.code == grpc.StatusCode.INVALID_ARGUMENT or err.refusal == REFUSAL_OVER_LIMIT:
        return EXIT_USAGE  # the request itself was wrong: malformed, or above max_count
    if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EXIT_REFUSED  # the server is overloaded; the same request may pass later
    return EXIT_FAILED


COMMANDS = {
    "serve": cmd_serve,
    "now": cmd_now,
    "status": cmd_status,
    "skew": run_skew,
    "txn": cmd_txn,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except config_module.ConfigError as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OracleNotServingError as err:
        print(f"hlc-oracle {args.command}: {args.target} refused: {err.details}", file=sys.stderr)
        return EXIT_REFUSED
    except (OracleUnavailableError, OracleTimeoutError) as err:
        print(f"hlc-oracle {args.command}: cannot reach {args.target}: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OracleError as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return exit_code_of(err)
    except (TypeError, ValueError) as err:
        print(f"hlc-oracle {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hlc-oracle status | head`): stop writing without a traceback,
        # as the Python documentation's SIGPIPE note recommends.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
