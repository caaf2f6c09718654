"""Our commands run as a user runs them: ``python -m`` in a process of their own, output
captured as text, bounded."""

from __future__ import annotations

import subprocess
import sys
import time

#: ``hlc-oracle`` as this environment runs it.
CLI = (sys.executable, "-m", "hlc_oracle.cli")


def run_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``hlc-oracle args...`` to its end; the exit code is the caller's to check."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def command_start_up_seconds() -> float:
    """How long ``hlc-oracle --help`` takes now: imports included, on this (shared) machine."""
    began = time.monotonic()
    subprocess.run([*CLI, "--help"], capture_output=True, check=True)
    return time.monotonic() - began
