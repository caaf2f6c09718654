"""How offset samples are combined into one :class:`OffsetEstimate` (:func:`combine_samples`).

One rule for every source of samples: NTP servers (each gives the interval
``offset +- (delay/2 + its own root distance)``) and a peer's recent measurements
(:mod:`.peers`: ``offset +- RTT/2``). The largest set of samples whose intervals overlap
(Marzullo) are the truechimers, the others falsetickers; the estimate is the median of the
truechimers' offsets and its bound covers all their intervals.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class OffsetSample(Protocol):
    """What :func:`combine_samples` reads of a sample (an NTP answer, a peer's measurement)."""

    @property
    def server(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def offset_us(self) -> int | None: ...
    @property
    def bound_us(self) -> int: ...
    @property
    def wall_s(self) -> float: ...


@dataclass(frozen=True)
class OffsetEstimate:
    """The combined offset of the local clock: the truth lies in ``offset_us +- bound_us``."""

    offset_us: int
    bound_us: int
    servers: tuple[str, ...]
    falsetickers: tuple[str, ...]
    # False when no majority of servers agreed: every server was used and the bound is wide.
    agreement: bool
    wall_s: float


def combine_samples(samples: Sequence[OffsetSample]) -> OffsetEstimate | None:
    """Combines healthy samples (one per server, or one peer's recent ones); ``None`` when
    there is none."""
    good = [s for s in samples if s.healthy and s.offset_us is not None]
    if not good:
        return None
    intervals = [(s.offset_us - s.bound_us, s.offset_us + s.bound_us) for s in good]  # type: ignore[operator]
    low, high, count = _largest_overlap(intervals)
    agreement = count * 2 > len(good)
    if agreement:
        chimers = [
            s for s, (lo, hi) in zip(good, intervals, strict=True) if lo <= low and hi >= high
        ]
    else:
        chimers = good
    chimer_ids = {id(s) for s in chimers}
    offsets = [s.offset_us for s in chimers if s.offset_us is not None]
    median = round(statistics.median(offsets))
    bound = max(abs(s.offset_us - median) + s.bound_us for s in chimers)  # type: ignore[operator]
    return OffsetEstimate(
        offset_us=median,
        bound_us=bound,
        servers=tuple(s.server for s in chimers),
        falsetickers=tuple(s.server for s in good if id(s) not in chimer_ids),
        agreement=agreement,
        wall_s=max(s.wall_s for s in good),
    )


def _largest_overlap(intervals: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """Marzullo's sweep: the region covered by the most intervals, and how many cover it."""
    edges = sorted([(lo, 0) for lo, _ in intervals] + [(hi, 1) for _, hi in intervals])
    best, depth, best_low, best_high = 0, 0, 0, 0
    for index, (point, kind) in enumerate(edges):
        if kind == 0:
            depth += 1
            if depth > best:
                best, best_low = depth, point
                best_high = next(p for p, k in edges[index + 1 :] if k == 1)
        else:
            depth -= 1
    return best_low, best_high, best
