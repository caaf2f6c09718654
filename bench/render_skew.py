"""Renders the skew benchmark figures (``bench/results/skew.json``) to a PNG and a Markdown table.

Usage: python bench/render_skew.py [RESULTS_JSON] [--png PATH]
Defaults: bench/results/skew.json, and the PNG beside it as skew.png. The table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("p50_us", "p99_us", "max_us", "min_us")


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        f"Max offset {report['max_offset_us']} us; divergence = timestamp.physical - physical "
        "clock read right after; NTP figures over repeated queries to chrony on loopback.",
        "",
        "| series | n | p50 (us) | p99 (us) | max (us) | min (us) | cost per op |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, figures in report["series"].items():
        cost = figures.get("cost_per_op_ns")
        cost_text = "-" if cost is None else _format_ns(cost)
        values = " | ".join(str(figures[column]) for column in COLUMNS)
        lines.append(f"| {name} | {figures['n']} | {values} | {cost_text} |")
    return "\n".join(lines)


def _format_ns(ns: float) -> str:
    return f"{ns:.0f} ns" if ns < 10_000 else f"{ns / 1000:.1f} us"


def render_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    names = list(report["series"])
    fig, ax = plt.subplots(figsize=(10, 0.8 * len(names) + 1.8))
    height = 0.2
    columns = [("min_us", "min"), ("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")]
    for index, (column, label) in enumerate(columns):
        values = [report["series"][name][column] for name in names]
        positions = [row + (index - 1.5) * height for row in range(len(names))]
        bars = ax.barh(positions, values, height=height, label=label)
        # Zero-length bars are invisible: print every value beside its bar.
        ax.bar_label(bars, labels=[str(v) for v in values], fontsize=6, padding=2)
    ax.axvline(report["max_offset_us"], color="red", linestyle="--", label="max offset")
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xscale("symlog", linthresh=1)
    lowest = min(report["series"][name]["min_us"] for name in names)
    ax.set_xlim(min(-10, lowest * 10), report["max_offset_us"] * 20)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("microseconds (symmetric log scale)")
    ax.set_title("hlc-oracle skew: HLC divergence from physical time, NTP offset and delay")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).parent / "results" / "skew.json"
    parser.add_argument("results", nargs="?", type=Path, default=default)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.results.read_text())
    except (OSError, ValueError) as err:
        print(f"render_skew: cannot read {args.results}: {err}", file=sys.stderr)
        return 2
    png = args.png or args.results.with_suffix(".png")
    render_png(report, png)
    print(markdown_table(report))
    print(f"\n![skew figures]({png})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
