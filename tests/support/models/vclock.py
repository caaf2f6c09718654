"""A dict-based vector clock: the reference for property tests and the benchmark baseline.

Written the way one would in plain Python (a ``dict`` of node → counter, zero counters absent),
not deliberately slow.
"""

from collections.abc import Mapping

BEFORE = "before"
AFTER = "after"
EQUAL = "equal"
CONCURRENT = "concurrent"

# (self has an event other has not seen, other has an event self has not seen) -> ordering
_ORDERING = {
    (False, False): EQUAL,
    (True, False): AFTER,
    (False, True): BEFORE,
    (True, True): CONCURRENT,
}


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
        """One pass over each dict with plain loops: the fastest dict version we could write."""
        mine, theirs = self.counters, other.counters
        ahead = behind = False
        get = theirs.get
        for node, count in mine.items():
            seen = get(node, 0)
            if count > seen:
                ahead = True
            elif count < seen:
                behind = True
        if not behind:
            # Counters are never zero, so a node only `other` has is an event we have not seen.
            for node in theirs:
                if node not in mine:
                    behind = True
                    break
        return _ORDERING[ahead, behind]

    def compare_with_any(self, other: "DictVectorClock") -> str:
        """The same, written the most direct way (two ``any`` over generator expressions)."""
        mine, theirs = self.counters, other.counters
        ahead = any(count > theirs.get(node, 0) for node, count in mine.items())
        behind = any(count > mine.get(node, 0) for node, count in theirs.items())
        return _ORDERING[ahead, behind]

    def copy(self) -> "DictVectorClock":
        return DictVectorClock(self.counters)
