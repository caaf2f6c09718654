"""The options every client command shares: ``--target``, ``--timeout``, ``--retries``, TLS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hlc_oracle import config as config_module
from hlc_oracle.client import RetryPolicy, channel_credentials


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
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
    if args.retries < 1:
        raise config_module.ConfigError(f"--retries must be at least 1, got {args.retries}")
    return {
        "timeout": args.timeout,
        "retry": RetryPolicy(attempts=args.retries),
        "credentials": credentials,
    }
