"""VectorClock.compare and merge with 4 and 32 entries, beside a dict-based Python vector clock
(``tests/support/models/vclock.py``: its loop-based ``compare``, the fastest we could write, is the
group's baseline; ``compare_with_any`` is the direct way to write it) and loro's ``VersionVector``
(a Rust version vector used from Python through pyo3: ``includes_vv`` and ``merge``).

The two clocks of each pair differ in their last entry only, so every comparison walks all the
entries (no early exit on a concurrent pair)."""

from typing import Any

import pytest
from hlc_oracle import Ordering, VectorClock

from tests.support.models.vclock import DictVectorClock

loro = pytest.importorskip("loro")

SIZES = [4, 32]


def counters(size: int, bump: int = 0) -> dict[int, int]:
    entries = {node * 7 + 1: 1000 + node for node in range(size)}
    last = max(entries)
    entries[last] += bump
    return entries


def loro_vv(entries: dict[int, int]) -> Any:
    vv = loro.VersionVector()
    for peer, counter in entries.items():
        vv.set_last(loro.ID(peer, counter))
    return vv


@pytest.mark.parametrize("size", SIZES)
def test_dict_compare(baseline: Any, size: int, measure_calls: Any) -> None:
    baseline.group = f"vclock-compare-{size}"
    older, newer = DictVectorClock(counters(size)), DictVectorClock(counters(size, 1))
    assert measure_calls(baseline, older.compare, newer) == "before"


@pytest.mark.parametrize("size", SIZES)
def test_dict_compare_with_any(benchmark: Any, size: int, measure_calls: Any) -> None:
    benchmark.group = f"vclock-compare-{size}"
    older, newer = DictVectorClock(counters(size)), DictVectorClock(counters(size, 1))
    assert measure_calls(benchmark, older.compare_with_any, newer) == "before"


@pytest.mark.parametrize("size", SIZES)
def test_vector_clock_compare(
    benchmark: Any, size: int, measure_calls: Any, interleaved_ratio: Any
) -> None:
    benchmark.group = f"vclock-compare-{size}"
    older, newer = VectorClock(counters(size)), VectorClock(counters(size, 1))
    assert measure_calls(benchmark, older.compare, newer) is Ordering.BEFORE
    # Back-to-back pairs against each baseline: the steadier figure on a shared machine.
    dict_older, dict_newer = DictVectorClock(counters(size)), DictVectorClock(counters(size, 1))
    loro_older, loro_newer = loro_vv(counters(size)), loro_vv(counters(size, 1))
    for name, reference, argument in (
        ("dict", dict_older.compare, dict_newer),
        ("dict_any", dict_older.compare_with_any, dict_newer),
        ("loro", loro_newer.includes_vv, loro_older),
    ):
        benchmark.extra_info[f"interleaved_ratio_to_{name}"] = round(
            interleaved_ratio(older.compare, reference, (newer,), (argument,), calls=5_000), 3
        )


@pytest.mark.parametrize("size", SIZES)
def test_loro_includes_vv(benchmark: Any, size: int, measure_calls: Any) -> None:
    benchmark.group = f"vclock-compare-{size}"
    older, newer = loro_vv(counters(size)), loro_vv(counters(size, 1))
    assert measure_calls(benchmark, newer.includes_vv, older) is True


@pytest.mark.parametrize("size", SIZES)
def test_dict_merge(baseline: Any, size: int, measure_calls: Any) -> None:
    baseline.group = f"vclock-merge-{size}"
    mine, other = DictVectorClock(counters(size)), DictVectorClock(counters(size, 1))
    measure_calls(baseline, mine.merge, other)
    assert mine.counters == other.counters


@pytest.mark.parametrize("size", SIZES)
def test_vector_clock_merge(benchmark: Any, size: int, measure_calls: Any) -> None:
    benchmark.group = f"vclock-merge-{size}"
    mine, other = VectorClock(counters(size)), VectorClock(counters(size, 1))
    measure_calls(benchmark, mine.merge, other)
    assert mine == other


@pytest.mark.parametrize("size", SIZES)
def test_loro_merge(benchmark: Any, size: int, measure_calls: Any) -> None:
    benchmark.group = f"vclock-merge-{size}"
    mine, other = loro_vv(counters(size)), loro_vv(counters(size, 1))
    measure_calls(benchmark, mine.merge, other)
    assert mine.includes_vv(other)
