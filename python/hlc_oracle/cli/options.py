"""The options every client command shares: ``--target``, ``--timeout``, ``--retries``, TLS;
and the argument types that make impossible values usage errors (exit 2) before anything runs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from hlc_oracle import Timestamp
from hlc_oracle import config as config_module
from hlc_oracle.addresses import AddressError, parse_address_list
from hlc_oracle.client import RetryPolicy, channel_credentials


def positive_int(text: str) -> int:
    """An integer of at least 1 (counts, keys, callers, attempts)."""
    try:
        value = int(text)
    except ValueError:
        message = f"must be an integer of at least 1, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def start_timestamp(text: str) -> Timestamp:
    """A transaction's start timestamp as ``now`` prints it (``<UTC time>Z/<logical>@<node>``)."""
    try:
        return Timestamp.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def transaction_id(text: str) -> int:
    """A transaction id, 1..2**64-1 (0 is the wire's "unset")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer in 1..2**64-1, got {text!r}"
        ) from None
    if not 1 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"must be in 1..2**64-1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (timeouts, durations)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, got {text!r}"
        )
    return value


def target_address(text: str) -> str:
    """``host:port``, or several comma-separated (the nodes of a cluster), each port 1..65535
    (see :mod:`hlc_oracle.addresses`: a URL, a ``;`` list or a stray comma is named, not dialed);
    the text is returned unchanged."""
    try:
        parse_address_list(text, "target")
    except AddressError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        type=target_address,
        default="127.0.0.1:50051",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="oracle address (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds per call, above 0 (default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=positive_int,
        default=None,
        help="attempts on UNAVAILABLE, at least 1 (default: 5 for one target; for several, as "
        "many as fit in --timeout, to ride out a leader failover)",
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA bundle: connect with TLS")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM client key (mutual TLS)")


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
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
    if args.retries is not None and args.retries < 1:
        raise config_module.ConfigError(f"--retries must be at least 1, got {args.retries}")
    return {
        "timeout": args.timeout,
        "retry": None if args.retries is None else RetryPolicy(attempts=args.retries),
        "credentials": credentials,
    }
