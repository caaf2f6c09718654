"""``hlc-oracle serve``: run one oracle node; its flags come from the configuration's fields."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from hlc_oracle import config as config_module
from hlc_oracle.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from hlc_oracle.setting import setting_doc, setting_flag


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an oracle node (no arguments: the embedded default on 127.0.0.1:50051)",
        description="Run one oracle node until SIGTERM/SIGINT (graceful shutdown, exit 0).",
    )
    _serve_arguments(serve)


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
            flag = setting_flag(f)
            if not flag:
                continue
            env = config_module.environment_variable(section_name, f.name)
            default = config_module.as_typed(getattr(section, f.name))
            parser.add_argument(
                flag,
                dest=f"{section_name}.{f.name}",
                metavar=f.name.upper(),
                help=f"{setting_doc(f)} (default {default}; {env})",
            )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="any setting, e.g. --set window.size_ms=5000 (see the example config in deploy/); "
        "a setting given twice on the command line (by its flag and --set, or two --set) is "
        "an error",
    )


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The command line's settings. Each may be given once: with its flag or with ``--set``,
    never both, so no precedence between them needs remembering."""
    overrides: dict[str, dict[str, Any]] = {}
    given_by: dict[str, str] = {}
    flags = {
        f"{section_name}.{f.name}": setting_flag(f)
        for section_name, section in config_module.sections(config_module.OracleConfig())
        for f in config_module.fields_of(section)
    }
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
            given_by[key] = f"{flags.get(key)} {value}"
    for item in args.set:
        key, equals, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not equals or not dot:
            raise config_module.ConfigError(f"--set takes SECTION.FIELD=VALUE, got {item!r}")
        if key in given_by:
            raise config_module.ConfigError(
                f"command line: {key} must be given once, got {given_by[key]} and --set {item}"
            )
        overrides.setdefault(section, {})[name] = value
        given_by[key] = f"--set {item}"
    return overrides


def run(args: argparse.Namespace) -> int:
    from hlc_oracle.node.window import WindowFileError
    from hlc_oracle.server import StartupConfigError, StartupError, serve
    from hlc_oracle.server.allocator import keep_freed_memory
    from hlc_oracle.server.logs import configure
    from hlc_oracle.server.stderr_relay import json_stderr

    config = config_module.load(args.config, overrides=_overrides(args))
    configure(config.log.level, config.log.format)
    keep_freed_memory()  # the process's own: batches reuse what the last one freed
    # In JSON mode even grpc-core's own lines and the errors below become JSON records.
    with json_stderr(enabled=config.log.format == "json"):
        try:
            fatal_reason = asyncio.run(serve(config))
        except StartupConfigError as err:
            # Exit 2, which systemd's RestartPreventExitStatus=2 does not restart in a loop.
            print(f"hlc-oracle serve: {err}", file=sys.stderr)
            return EXIT_USAGE
        except (StartupError, WindowFileError) as err:
            print(f"hlc-oracle serve: {err}", file=sys.stderr)
            return EXIT_FAILED
        if fatal_reason is not None:
            print(f"hlc-oracle serve: stopped: {fatal_reason}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK
