"""A dict-based vector clock: the reference for property tests and the benchmark baseline.

Written the way one would in plain Python (a ``dict`` of node → counter, zero counters absent),
not deliberately slow.
"""

from collections.abc import Mapping

BEFORE = "before"
AFTER = "after"
EQUAL = "equal"
CONCURRENT = "concurrent"


class DictVectorClock:
    __slots__ = ("counters",)

    def __init__(self, counters: Mapping[int, int] | None = None) -> None:
        self.counters: dict[int, int] = {
            node: count for node, count in (counters or {}).items() if count
        }

    def increment(self, node: int) -> int:
        count = self.counters.get(node, 0) + 1
        self.counters[node] = count
        return count

    def get(self, node: int) -> int:
        return self.counters.get(node, 0)

    def merge(self, other: "DictVectorClock") -> None:
        mine = self.counters
        for node, count in other.counters.items():
            if count > mine.get(node, 0):
                mine[node] = count

    def compare(self, other: "DictVectorClock") -> str:
        mine, theirs = self.counters, other.counters
        ahead = any(count > theirs.get(node, 0) for node, count in mine.items())
        behind = any(count > mine.get(node, 0) for node, count in theirs.items())
        if ahead and behind:
            return CONCURRENT
        if ahead:
            return AFTER
        if behind:
            return BEFORE
        return EQUAL

    def copy(self) -> "DictVectorClock":
        return DictVectorClock(self.counters)
