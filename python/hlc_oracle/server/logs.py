"""Structured logs: one JSON object per line (or plain text), with fields from ``extra``.

Call ``log.info("message", extra={"fields": {"key": value}})``; the fields become keys of the
JSON object (``key=value`` pairs in text). Values are written as a reader wants them
(:func:`loggable`): a timestamp as its text, and a node's "no timestamp yet" as ``null`` rather
than 1970; a float without binary noise (``5.043464``, not ``5.043464223000001``); in text, a
field without a value (``None``) is left out rather than printed as ``None``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from hlc_oracle import Timestamp

#: Decimal places a logged float keeps: microseconds, for values in seconds.
FLOAT_DECIMALS = 6


def loggable(value: Any) -> Any:
    """``value`` as a log record shows it (see the module docstring)."""
    if isinstance(value, Timestamp):
        return str(value) if value.physical else None
    if isinstance(value, float):
        return round(value, FLOAT_DECIMALS)
    return value


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    if not isinstance(fields, dict):
        return {}
    return {key: loggable(value) for key, value in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        suffix = "".join(
            f" {key}={value}" for key, value in _fields(record).items() if value is not None
        )
        return f"{record.levelname.lower():7} {record.name}: {record.getMessage()}{suffix}"


def configure(level: str, format: str) -> None:
    """Sends the package's logs to stderr in ``format`` (json or text) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger("hlc_oracle")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
