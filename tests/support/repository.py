"""The repository's own files as the tests read them: its root, ``deploy/``, and the compose
file's services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    """``deploy/compose.yaml``, parsed."""
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def host_files(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (under deploy/) of the service's bind mounts."""
    mounts = [mount.split(":") for mount in service["volumes"]]
    return {target: source for source, target, *_ in mounts if source.startswith("./")}
