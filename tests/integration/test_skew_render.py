"""bench/render_skew.py turns the skew benchmark JSON into a PNG and a Markdown table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.repository import ROOT

REPORT = {
    "max_offset_us": 500_000,
    "ops": 3,
    "series": {
        "now() loop": {"n": 3, "p50_us": 0, "p99_us": 0, "max_us": 0, "min_us": -5},
        "NTP delay to chrony": {
            "n": 3,
            "p50_us": 20,
            "p99_us": 40,
            "max_us": 41,
            "min_us": 18,
            "cost_per_op_ns": 51_000.0,
        },
    },
}


def test_render_png_and_table(tmp_path: Path) -> None:
    results = tmp_path / "skew.json"
    results.write_text(json.dumps(REPORT))
    script = ROOT / "bench" / "render_skew.py"
    done = subprocess.run(
        [sys.executable, str(script), str(results)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    png = tmp_path / "skew.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[2] == "| now() loop | 3 | 0 | 0 | 0 | -5 | - |"
    assert rows[3] == "| NTP delay to chrony | 3 | 20 | 40 | 41 | 18 | 51.0 us |"


def test_render_reports_missing_file(tmp_path: Path) -> None:
    script = ROOT / "bench" / "render_skew.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "cannot read" in done.stderr
