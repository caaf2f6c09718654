"""``hlc-oracle now``, ``status`` and ``txn``: one call (or a few) on an oracle, printed."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from typing import Any

from hlc_oracle import Aborted, Committed
from hlc_oracle.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, failure_of
from hlc_oracle.cli.options import (
    add_client_arguments,
    client_kwargs,
    positive_int,
    start_timestamp,
    transaction_id,
)
from hlc_oracle.client import OracleClient, OracleError, OracleStatus


def add_parsers(commands: Any) -> None:
    now = commands.add_parser("now", help="print timestamps from an oracle")
    now.add_argument(
        "--count", type=positive_int, default=1, help="how many, at least 1 (default %(default)s)"
    )
    now.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(now)

    status = commands.add_parser("status", help="print an oracle's status")
    status.add_argument(
        "--json",
        action="store_true",
        help="print every field as JSON, with raw values (microseconds, seconds): null for "
        "what the node does not know or has not got (the NTP offset before an answer, the last "
        'timestamp before the first), 0 or "" for the cluster fields of a standalone node or '
        "one that knows no leader; with several targets, a list of them, one per node",
    )
    add_client_arguments(status)

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
        sub.add_argument(
            "txn_id", type=transaction_id, metavar="ID", help="transaction id, 1..2**64-1"
        )
        sub.add_argument(
            "--start",
            type=start_timestamp,
            metavar="TS",
            help="the transaction's start timestamp, as `now` prints it, when known: a leader "
            "that just took over answers without waiting for its whole decision history "
            "(name only the start this transaction took: docs/cluster.md)",
        )
        sub.add_argument("--json", action="store_true", help="print JSON")
        add_client_arguments(sub)


def cmd_now(args: argparse.Namespace) -> int:
    with OracleClient(args.target, **client_kwargs(args)) as client:
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


def status_fields(status: OracleStatus) -> dict[str, Any]:
    """Every ``GetStatus`` field of one node, with raw values, as ``status --json`` prints them:
    ``null`` for what the node does not know (the NTP offset before an answer) or has not got
    (the last timestamp before the first one handed out); 0 or ``""`` for the cluster fields of
    a node that knows no leader, or is standalone."""
    fields = {
        f.name: getattr(status, f.name) for f in dataclasses.fields(status) if f.name != "message"
    }
    last = status.last_timestamp
    fields["last_timestamp"] = str(last) if last.physical else None
    return fields


def cmd_status(args: argparse.Namespace) -> int:
    if "," in args.target:
        return cluster_status(args)
    with OracleClient(args.target, **client_kwargs(args)) as client:
        status = client.status()
    fields = status_fields(status)
    if args.json:
        print(json.dumps(fields))
    else:
        servers = fields.pop("ntp_servers")
        peers = fields.pop("peers")
        width = max(len(name) for name in fields)
        for name in fields:
            print(f"{name:<{width}}  {for_people(status, name)}")
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
        for peer in peers:
            figures = (
                f"offset {peer['offset_us']:+d} us +-{peer['bound_us']} us"
                + (" (far)" if peer["far"] else "")
                if "offset_us" in peer
                else f"not measured ({peer['last_error'] or 'no answer yet'})"
            )
            print(f"{'peer node ' + str(peer['node_id']):<{width}}  {peer['address']}: {figures}")
    return EXIT_OK if status.serving else EXIT_FAILED


def cluster_status(args: argparse.Namespace) -> int:
    """``status --target a,b,c``: one line per node (role, node id, serving, the leader it knows,
    epoch), or why it did not answer; ``--json``: every field of each node, as for one target,
    with its ``target`` (or the ``error`` instead). Exit 0 when some node serves, 1 when nodes
    answered and none serves, and when none answered, the code of the first node's failure (3
    when all are unreachable), as for one target."""
    with OracleClient(args.target, **client_kwargs(args)) as client:
        answers = client.statuses()
    rows: list[dict[str, Any]] = []
    for target, answer in answers.items():
        if isinstance(answer, OracleStatus):
            rows.append({"target": target, **status_fields(answer)})
        else:
            rows.append({"target": target, "error": str(answer)})
    if args.json:
        print(json.dumps(rows))
    else:
        width = max(len(row["target"]) for row in rows)
        for row in rows:
            if "error" in row:
                print(f"{row['target']:<{width}}  unreachable: {row['error']}")
                continue
            serving = "serving" if row["serving"] else f"not serving ({row['not_serving_reason']})"
            leader = f", leader {row['leader_address']}" if row["leader_address"] else ""
            epoch = f", epoch {row['epoch']}" if row["epoch"] else ""
            print(
                f"{row['target']:<{width}}  {row['role']} node {row['node_id']}, {serving}"
                f"{leader}{epoch}"
            )
    failures = [answer for answer in answers.values() if isinstance(answer, OracleError)]
    if failures and len(failures) == len(answers):
        return failure_of(failures[0], args.target)[1]
    return EXIT_OK if any(row.get("serving") for row in rows) else EXIT_FAILED


#: What an epoch number is, for people reading ``status``.
EPOCH_MEANING = (
    "etcd's revision when this leader won: it grows with every new leader, by the number of etcd "
    "writes in between"
)

#: GetStatus fields that only a clustered node has values for.
CLUSTER_FIELDS = (
    "leader_address",
    "leader_node_id",
    "epoch",
    "lease_remaining_s",
    "decision_retention_s",
)


def for_people(status: OracleStatus, name: str) -> str:
    """One ``GetStatus`` field as a person reads it: units, ``unknown``/``none`` for what the
    node does not know or does not have (never a 1970 timestamp), times as UTC dates."""
    value = getattr(status, name)
    if name in CLUSTER_FIELDS and status.role == "standalone":
        return "none (standalone)"
    if name == "last_timestamp":
        return str(value) if value.physical else "none (no timestamp handed out yet)"
    if name in ("persisted_window_us", "physical_now_us"):
        if not value:
            return "none"
        text = f"{utc(value)} ({value} us since the Unix epoch)"
        if name == "persisted_window_us" and status.physical_now_us:
            ahead_ms = (value - status.physical_now_us) / 1000
            text += f", {ahead_ms:,.0f} ms ahead of the clock"
        return text
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "uptime_seconds":
        return duration(value)
    if name.endswith("_us") and isinstance(value, int):
        signed = "+" if name == "ntp_offset_us" and value > 0 else ""
        return f"{signed}{value:,} us"
    if name.endswith("_s") and isinstance(value, float):
        return f"{value:.3f} s"
    if name == "epoch":
        return f"{value} ({EPOCH_MEANING})" if value else "none"
    if isinstance(value, str) and not value:
        return "none"
    return str(value)


def utc(microseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(microseconds / 1e6, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration(seconds: float) -> str:
    """``5.8 s``, ``12 min 5 s``, ``3 h 4 min``, ``2 d 3 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


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
    """``txn status ID``: exit 0 committed, 1 aborted, 4 unknown; ``txn abort ID``: exit 0 when
    it is aborted (by this call or before), 1 when it had committed."""
    with OracleClient(args.target, **client_kwargs(args)) as client:
        if args.txn_command == "status":
            outcome = client.transaction_status(args.txn_id, args.start)
        else:
            outcome = client.abort(args.txn_id, args.start)
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
    # txn status: 0 committed, 1 aborted; txn abort: 0 aborted (its purpose), 1 it had committed.
    wanted = Committed if args.txn_command == "status" else Aborted
    return EXIT_OK if isinstance(outcome, wanted) else EXIT_FAILED
