"""The ``hlc-oracle`` command line in process (``main`` and its parsers), without a server: every
parser refuses abbreviations, impossible values are usage errors (exit 2) before anything runs,
an unknown option shows its command's usage, help texts name every refusing mode, ``status`` for
people. The command run in a process of its own: ``tests/integration/test_cli_commands.py``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest
from hlc_oracle import Timestamp
from hlc_oracle.cli import EXIT_USAGE, build_parser, main
from hlc_oracle.cli.bench import bench_count
from hlc_oracle.cli.calls import for_people, status_fields
from hlc_oracle.client import OracleStatus
from hlc_oracle.config import ConfigError
from hlc_oracle.proto import oracle_pb2 as pb


def every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from every_parser(child)


def option_help(command: str, option: str) -> str:
    """The help text of ``option`` of ``command``, unwrapped."""
    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = commands.choices[command]
    (action,) = (a for a in parser._actions if option in a.option_strings)
    return str(action.help)


def test_no_parser_accepts_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    parsers = list(every_parser(build_parser()))
    assert len(parsers) >= 9  # the command, six commands, txn's two actions
    assert all(not parser.allow_abbrev for parser in parsers)
    # `--port` used to mean --port-file.
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "50061"])
    assert exited.value.code == EXIT_USAGE
    assert "unrecognized arguments: --port 50061" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["now", "--timeout", "0"], "--timeout: must be a finite number of seconds above 0"),
        (["now", "--timeout", "-1"], "--timeout: must be a finite number of seconds above 0"),
        (["now", "--timeout", "nan"], "--timeout: must be a finite number of seconds above 0"),
        (["status", "--timeout", "inf"], "--timeout: must be a finite number of seconds above 0"),
        (["now", "--target", "127.0.0.1:99999"], "the port must be in 1..65535, got '99999'"),
        (["now", "--target", "127.0.0.1:"], "the port must be in 1..65535, got ''"),
        (["now", "--target", "oracle"], "'oracle' must be host:port"),
        (["now", "--target", "a:1,:2"], "':2' must be host:port"),
        # A URL, a ';' list and a stray comma are named, not dialed until the timeout.
        (["now", "--target", "http://127.0.0.1:51151"], "is a URL: give host:port without"),
        (["now", "--target", "a:1;b:2"], "it has ';' (separate several addresses with commas)"),
        (["now", "--target", "a;b"], "it has ';'"),
        (["status", "--target", "a:1,"], "has an empty target (a trailing comma)"),
        (["status", "--target", "a:1,,b:2"], "has an empty target (entry 2)"),
        (["now", "--target", "::1:5"], "put an IPv6 address in [brackets]"),
        (["now", "--count", "0"], "--count: must be at least 1, got 0"),
        (["now", "--retries", "0"], "--retries: must be at least 1, got 0"),
        (["bench", "--mode", "commit", "--keys", "0"], "--keys: must be at least 1, got 0"),
        (["bench", "--concurrency", "-3"], "--concurrency: must be at least 1, got -3"),
        (["bench", "--duration", "0"], "--duration: must be a finite number of seconds above 0"),
        (["txn", "status", "1", "--timeout", "0"], "--timeout: must be a finite number"),
        (["skew", "--server", "x", "--burst", "0"], "--burst: must be at least 1, got 0"),
        (["txn", "status", "0"], "ID: must be in 1..2**64-1, got 0"),
        (["txn", "abort", str(2**64)], f"ID: must be in 1..2**64-1, got {2**64}"),
        (["txn", "status", "x"], "ID: must be an integer in 1..2**64-1, got 'x'"),
        (["txn", "abort", "1", "--start", "x"], '--start: cannot parse timestamp "x"'),
    ],
)
def test_impossible_values_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_an_unknown_option_shows_the_usage_of_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args, usage in (
        (["serve", "--bogus"], "usage: hlc-oracle serve "),
        (["txn", "status", "1", "--bogus"], "usage: hlc-oracle txn status "),
        (["--bogus", "now"], "usage: hlc-oracle [-h]"),  # given before the command: the top's
    ):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith(usage) and "unrecognized arguments: --bogus" in err, err


def test_status_json_help_says_null_for_unknown_and_bench_count_names_every_refusing_mode() -> None:
    status_help = option_help("status", "--json")
    assert "null for what the node does not know" in status_help
    assert "0 for none" not in status_help
    count_help = option_help("bench", "--count")
    refused_clause = count_help[count_help.index("refused in") : count_help.index("whose")]
    for mode in ("merged", "ranges", "unary", "commit", "commit-batch"):
        args = build_parser().parse_args(["bench", "--mode", mode, "--count", "2"])
        try:
            bench_count(args)
            refused = False
        except ConfigError:
            refused = True
        named = re.search(rf"(?<![\w-]){re.escape(mode)}(?![\w-])", refused_clause) is not None
        assert named == refused, (mode, refused_clause)


def test_good_targets_pass() -> None:
    for target in ("127.0.0.1:50051", "oracle-0.oracle:1", "[::1]:50051", "a:1,b:2,c:65535"):
        args = build_parser().parse_args(["now", "--target", target])
        assert args.target == target


def test_status_for_people_has_units_unknowns_and_no_1970() -> None:
    response = pb.GetStatusResponse(node_id=3, role="standalone", uptime_seconds=5.809603864999644)
    response.clock.max_offset_us = 500_000
    fresh = OracleStatus.from_wire(response)
    shown = {name: for_people(fresh, name) for name in vars(fresh) if name != "message"}
    assert shown["last_timestamp"] == "none (no timestamp handed out yet)"
    assert shown["uptime_seconds"] == "5.8 s"
    assert shown["ntp_offset_us"] == "unknown" and shown["ntp_offset_bound_us"] == "unknown"
    assert shown["max_offset_us"] == "500,000 us"
    assert shown["serving"] == "no"
    for name in ("leader_address", "leader_node_id", "epoch", "lease_remaining_s"):
        assert shown[name] == "none (standalone)", name
    assert not any("1970" in text or "None" in text for text in shown.values()), shown
    # --json: null for what the node has not got, never a 1970 timestamp.
    assert status_fields(fresh)["last_timestamp"] is None
    assert status_fields(fresh)["ntp_offset_us"] is None
    response.last_timestamp.physical = 1_795_269_099_671_261
    response.clock.physical_now_us = 1_795_269_099_700_000
    response.persisted_window_us = 1_795_269_102_700_000
    response.uptime_seconds = 3725.0
    response.role = "follower"
    response.lease_remaining_s = 2.5
    served = OracleStatus.from_wire(response)
    assert for_people(served, "leader_address") == "none"  # no leader known
    assert for_people(served, "epoch") == "none"
    response.epoch = 1028
    # An epoch is etcd's revision, so epochs jump (295, 1028, 6880): status says so.
    assert for_people(OracleStatus.from_wire(response), "epoch") == (
        "1028 (etcd's revision when this leader won: it grows with every new leader, by the "
        "number of etcd writes in between)"
    )
    assert for_people(served, "lease_remaining_s") == "2.500 s"
    assert for_people(served, "last_timestamp") == str(Timestamp(1_795_269_099_671_261))
    assert for_people(served, "uptime_seconds") == "1 h 2 min"
    assert for_people(served, "persisted_window_us").endswith(", 3,000 ms ahead of the clock")
