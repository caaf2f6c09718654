"""TimestampBatcher on its own: merging concurrent callers and splitting ranges back.

The fetch function is a real core Clock's reserve (the same call the server makes), with an
``await`` in between, as a network round trip would have.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest
from hlc_oracle import Clock, Timestamp, TimestampRange
from hlc_oracle.client import OracleTimeoutError, TimestampBatcher


class ClockFetch:
    def __init__(self) -> None:
        self.clock = Clock(node=5)
        self.counts: list[int] = []
        self.deadlines: list[float] = []
        self.fail_next = False

    async def __call__(self, count: int, deadline: float = math.inf) -> TimestampRange:
        self.counts.append(count)
        self.deadlines.append(deadline)
        await asyncio.sleep(0.001)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("oracle went away")
        return self.clock.reserve(count)


def test_concurrent_callers_are_merged_and_get_distinct_timestamps() -> None:
    fetch = ClockFetch()

    async def main() -> list[list[Timestamp]]:
        batcher = TimestampBatcher(fetch)

        async def caller() -> list[Timestamp]:
            return [await batcher.get() for _ in range(50)]

        return await asyncio.gather(*(caller() for _ in range(100)))

    results = asyncio.run(main())
    everything = [ts for stamps in results for ts in stamps]
    assert len(set(everything)) == 5000
    for stamps in results:
        assert all(a < b for a, b in itertools.pairwise(stamps))
    assert sum(fetch.counts) == 5000
    # Merging happened: about one fetch per round of callers, not one per call.
    assert len(fetch.counts) <= 200
    assert max(fetch.counts) == 100


def test_callers_get_the_range_in_arrival_order() -> None:
    fetch = ClockFetch()

    async def main() -> list[Timestamp]:
        batcher = TimestampBatcher(fetch)
        futures = [batcher.get() for _ in range(10)]
        return list(await asyncio.gather(*futures))

    stamps = asyncio.run(main())
    assert stamps == sorted(stamps)
    assert fetch.counts == [10]
    assert stamps[-1].to_int() - stamps[0].to_int() == 9


def test_max_batch_splits_large_crowds() -> None:
    fetch = ClockFetch()

    async def main() -> None:
        batcher = TimestampBatcher(fetch, max_batch=7)
        await asyncio.gather(*(batcher.get() for _ in range(20)))

    asyncio.run(main())
    assert fetch.counts == [7, 7, 6]
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        TimestampBatcher(fetch, max_batch=0)


def test_a_failed_fetch_fails_its_batch_only() -> None:
    fetch = ClockFetch()
    fetch.fail_next = True

    async def main() -> tuple[list[object], Timestamp]:
        batcher = TimestampBatcher(fetch)
        first_batch = await asyncio.gather(
            *(batcher.get() for _ in range(3)), return_exceptions=True
        )
        return first_batch, await batcher.get()

    failed, later = asyncio.run(main())
    assert all(isinstance(result, ConnectionError) for result in failed)
    assert isinstance(later, Timestamp)


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    fetch = ClockFetch()

    async def main() -> list[Timestamp]:
        batcher = TimestampBatcher(fetch)
        futures = [batcher.get() for _ in range(4)]
        futures[1].cancel()
        return [await f for i, f in enumerate(futures) if i != 1]

    stamps = asyncio.run(main())
    assert len(set(stamps)) == 3


def test_ranges_and_singles_share_a_batch_and_get_disjoint_parts() -> None:
    fetch = ClockFetch()

    async def main() -> list[object]:
        batcher = TimestampBatcher(fetch)
        futures: list[asyncio.Future[object]] = [
            batcher.get(),  # type: ignore[list-item]
            batcher.get_range(1000),  # type: ignore[list-item]
            batcher.get_range(1),  # type: ignore[list-item]
            batcher.get(),  # type: ignore[list-item]
            batcher.get_range(7),  # type: ignore[list-item]
        ]
        return list(await asyncio.gather(*futures))

    single, thousand, range_of_one, second, seven = asyncio.run(main())
    assert fetch.counts == [1010]
    assert isinstance(single, Timestamp) and isinstance(second, Timestamp)
    assert isinstance(thousand, TimestampRange) and len(thousand) == 1000
    assert isinstance(range_of_one, TimestampRange) and len(range_of_one) == 1
    assert isinstance(seven, TimestampRange) and len(seven) == 7
    # Arrival order, contiguous and disjoint: the merged range cut in pieces.
    ints = [
        (single.to_int(), single.to_int()),
        (thousand.first.to_int(), thousand.last.to_int()),
        (range_of_one.first.to_int(), range_of_one.last.to_int()),
        (second.to_int(), second.to_int()),
        (seven.first.to_int(), seven.last.to_int()),
    ]
    for (_, last), (first, _) in itertools.pairwise(ints):
        assert first == last + 1


def test_max_batch_counts_timestamps_and_a_big_request_goes_alone() -> None:
    fetch = ClockFetch()

    async def main() -> None:
        batcher = TimestampBatcher(fetch, max_batch=100)
        await asyncio.gather(
            batcher.get_range(60), batcher.get_range(60), batcher.get_range(500), batcher.get()
        )

    asyncio.run(main())
    assert fetch.counts == [60, 60, 500, 1]
    with pytest.raises(ValueError, match="count must be at least 1, got 0"):
        asyncio.run(_get_range(TimestampBatcher(fetch), 0))


async def _get_range(batcher: TimestampBatcher, count: int) -> TimestampRange:
    return await batcher.get_range(count)


def test_over_limit_merged_batch_is_retried_request_by_request() -> None:
    import grpc
    from hlc_oracle.client import OracleError

    clock = Clock(node=6)
    counts: list[int] = []

    async def limited_fetch(count: int, deadline: float) -> TimestampRange:
        # The server's rule (limits.max_count = 100), as the client sees it over the wire.
        counts.append(count)
        await asyncio.sleep(0)
        if count > 100:
            raise OracleError(grpc.StatusCode.RESOURCE_EXHAUSTED, "count above max_count=100")
        return clock.reserve(count)

    async def main() -> list[object]:
        batcher = TimestampBatcher(limited_fetch)
        futures = [batcher.get_range(80), batcher.get_range(80), batcher.get_range(150)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    first, second, too_big = asyncio.run(main())
    assert counts == [310, 80, 80, 150]
    assert isinstance(first, TimestampRange) and isinstance(second, TimestampRange)
    assert first.last < second.first
    assert isinstance(too_big, OracleError)
    assert too_big.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_wait_behind_a_fetch_counts_toward_the_call_s_timeout() -> None:
    """A request still queued behind the fetch in flight when its timeout runs out fails as a
    timed-out call does, saying it was never sent, and is not fetched; a fetch gets its
    requests' earliest deadline (each call's start plus its timeout)."""
    release = asyncio.Event()
    deadlines: list[float] = []
    clock = Clock(node=7)

    async def held_fetch(count: int, deadline: float) -> TimestampRange:
        deadlines.append(deadline)
        await release.wait()
        return clock.reserve(count)

    async def main() -> None:
        batcher = TimestampBatcher(held_fetch)
        started = time.monotonic()
        in_flight = batcher.get(60.0)
        for _ in range(100):
            if deadlines:
                break
            await asyncio.sleep(0.001)
        assert deadlines == [pytest.approx(started + 60.0, abs=1.0)]
        queued = batcher.get_range(5, 0.05)
        later = batcher.get(30.0)
        with pytest.raises(OracleTimeoutError, match="never sent") as raised:
            await asyncio.wait_for(queued, 10.0)
        assert raised.value.code.name == "DEADLINE_EXCEEDED"
        assert not later.done()
        release.set()
        assert isinstance(await asyncio.wait_for(in_flight, 10.0), Timestamp)
        assert isinstance(await asyncio.wait_for(later, 10.0), Timestamp)
        # The second fetch carried only the caller still waiting, with its own deadline.
        assert len(deadlines) == 2
        assert deadlines[1] == pytest.approx(started + 30.0, abs=1.0)
        await batcher.close()

    asyncio.run(main())
