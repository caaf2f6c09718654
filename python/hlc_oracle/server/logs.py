"""Structured logs: one JSON object per line (or plain text), with fields from ``extra``.

Call ``log.info("message", extra={"fields": {"key": value}})``; the fields become keys of the
JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        suffix = ""
        if isinstance(fields, dict):
            suffix = " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{record.levelname.lower():7} {record.name}: {record.getMessage()}{suffix}"


def configure(level: str, format: str) -> None:
    """Sends the package's logs to stderr in ``format`` (json or text) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger("hlc_oracle")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
