"""Prints each benchmark's ratio to its group's baseline from a pytest-benchmark JSON file: of the
medians, and of the minimums (on a shared machine, noise only ever adds time, so for calls of tens
of nanoseconds the ratio of minimums is the steadier one).

Usage: python bench/ratios.py bench/results/latest.json
"""

import json
import sys
from collections import defaultdict
from typing import Any


def ratio_table(report: dict[str, Any]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in report["benchmarks"]:
        groups[bench.get("group") or "(no group)"].append(bench)
    lines = [
        "| group | benchmark | median | ratio to baseline | min | ratio of mins |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group, benches in sorted(groups.items()):
        base = next((b for b in benches if b.get("extra_info", {}).get("baseline")), None)
        for bench in sorted(benches, key=lambda b: b["stats"]["median"]):
            median, least = bench["stats"]["median"], bench["stats"]["min"]
            ratio = f"{median / base['stats']['median']:.2f}x" if base else "-"
            min_ratio = f"{least / base['stats']['min']:.2f}x" if base else "-"
            marker = " (baseline)" if bench is base else ""
            lines.append(
                f"| {group} | {bench['name']}{marker} | {format_seconds(median)} | {ratio} "
                f"| {format_seconds(least)} | {min_ratio} |"
            )
    return lines


def format_seconds(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.1f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.2f} ms"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        report = json.load(handle)
    print("\n".join(ratio_table(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
