"""Clock: the paper's send/receive rules, the max-offset guard, reserve, floor, backward jumps,
thread safety, and bad input."""

import itertools
import threading
from typing import Any

import pytest
from hlc_oracle import (
    MAX_LOGICAL,
    MAX_RESERVE,
    Clock,
    ClockSkewError,
    HlcError,
    ManualClock,
    SystemClock,
    Timestamp,
    TimestampRange,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.models import hlc as model

START_US = 1_000_000_000
MAX_OFFSET_US = 500
NODE = 7


def manual_clock(start_us: int = START_US, **kwargs: Any) -> tuple[Clock, ManualClock]:
    physical = ManualClock(start_us)
    clock = Clock(
        node=NODE,
        max_offset_us=MAX_OFFSET_US,
        physical_clock=physical,
        backward_jump_tolerance_us=0,
        **kwargs,
    )
    return clock, physical


def pair(ts: Timestamp) -> tuple[int, int]:
    return ts.physical, ts.logical


# Each row: (physical clock reading, event, remote (physical, logical) or None, expected result).
SCENARIOS = [
    (100, "send", None, (100, 0)),  # pt ahead of l: take pt, c = 0
    (100, "send", None, (100, 1)),  # pt == l: c + 1
    (90, "send", None, (100, 2)),  # physical clock stepped back: l holds, c + 1
    (90, "recv", (100, 9), (100, 10)),  # l == l' == l_m: max(c, c_m) + 1
    (90, "recv", (100, 3), (100, 11)),  # ... with the local counter larger
    (90, "recv", (99, 50), (100, 12)),  # l == l' > l_m: c + 1
    (100, "recv", (150, 4), (150, 5)),  # remote ahead within max offset: c_m + 1
    (200, "recv", (150, 9), (200, 0)),  # physical wins: c = 0
    (200, "recv", (200, 0), (200, 1)),  # l == pt == l_m
    (200, "send", None, (200, 2)),
]


def test_send_and_receive_rules_table() -> None:
    clock, physical = manual_clock(start_us=100)
    for row, (pt, event, remote, expected) in enumerate(SCENARIOS):
        physical.set(pt)
        if event == "send":
            got = clock.now()
        else:
            assert remote is not None
            got = clock.update(Timestamp(*remote, node=99))
        assert pair(got) == expected, f"row {row}"
        assert got.node == NODE
        assert clock.last() == got


events = st.one_of(
    st.tuples(st.just("step"), st.integers(-2_000, 2_000)),
    st.tuples(st.just("send"), st.just(0), st.just(0)),
    st.tuples(
        st.just("recv"),
        st.integers(-3 * MAX_OFFSET_US, MAX_OFFSET_US),
        st.integers(0, MAX_LOGICAL),
    ),
    st.tuples(st.just("burst"), st.integers(1, 5_000)),
)


@settings(max_examples=300)
@given(st.lists(events, max_size=60))
def test_agrees_exactly_with_the_paper(script: list[tuple[Any, ...]]) -> None:
    clock, physical = manual_clock()
    state = (0, 0)
    highest_pt = START_US
    largest_remote_logical = 0
    events_seen = 0
    previous = None
    for step in script:
        kind = step[0]
        if kind == "step":
            physical.set(max(0, physical.now_us() + step[1]))
            continue
        pt = physical.now_us()
        highest_pt = max(highest_pt, pt)
        if kind == "send":
            got = clock.now()
            state = model.send(state, pt)
            events_seen += 1
        elif kind == "recv":
            remote = (pt + step[1], step[2])
            largest_remote_logical = max(largest_remote_logical, step[2])
            got = clock.update(Timestamp(*remote, node=1))
            state = model.receive(state, remote, pt)
            events_seen += 1
        else:  # a burst of sends inside one microsecond: exercises the logical carry
            for _ in range(step[1]):
                state = model.send(state, pt)
            got = clock.reserve(step[1]).last
            events_seen += step[1]
        assert pair(got) == state
        assert previous is None or got > previous
        previous = got
        # The paper's bounds: l never falls behind the physical clock, runs ahead of the highest
        # physical reading by at most max offset (plus one microsecond per logical carry, and a
        # carry needs 4,096 ticks counted from the largest remote counter), and c stays below the
        # events seen plus the largest remote counter.
        l, c = state  # noqa: E741 - the paper's names
        carries = (largest_remote_logical + events_seen) // (MAX_LOGICAL + 1)
        assert l >= pt
        assert l - highest_pt <= MAX_OFFSET_US + carries
        assert c <= largest_remote_logical + events_seen


def test_remote_past_max_offset_raises_and_leaves_the_clock_unchanged() -> None:
    clock, _ = manual_clock()
    before = clock.now()
    with pytest.raises(ClockSkewError, match="max_offset_us=500") as info:
        clock.update(Timestamp(START_US + MAX_OFFSET_US + 1, 0, 1))
    assert isinstance(info.value, HlcError)
    assert "501 us ahead" in str(info.value)
    assert clock.last() == before
    assert pair(clock.now()) == (START_US, before.logical + 1)
    # Exactly max offset ahead is accepted.
    assert pair(clock.update(Timestamp(START_US + MAX_OFFSET_US, 3, 1))) == (
        START_US + MAX_OFFSET_US,
        4,
    )


# A refused update changes nothing observable, counters included. Each row: (physical clock
# reading, remote physical offset from it or None for a send, accepted?, backward_jumps after).
REFUSED_UPDATES = [
    (START_US, None, True, 0),  # highest reading seen: START_US
    (START_US - 100, MAX_OFFSET_US + 1_000, False, 0),  # refused: the step back is not recorded
    (START_US - 100, None, True, 1),  # the next call that succeeds counts it
    (START_US + 5_000, MAX_OFFSET_US + 1, False, 1),  # refused: this reading is not recorded...
    (START_US, None, True, 1),  # ... so START_US is no step back from it
    (START_US - 1_000, 0, True, 2),
]


def test_refused_update_leaves_last_and_backward_jumps_unchanged() -> None:
    clock, physical = manual_clock()
    for row, (pt, ahead, accepted, jumps) in enumerate(REFUSED_UPDATES):
        physical.set(pt)
        before = clock.last()
        if ahead is None:
            clock.now()
        elif accepted:
            clock.update(Timestamp(pt + ahead, 0, 1))
        else:
            with pytest.raises(ClockSkewError):
                clock.update(Timestamp(pt + ahead, 0, 1))
            assert clock.last() == before, f"row {row}"
        assert clock.backward_jumps == jumps, f"row {row}"


def test_logical_overflow_moves_physical_forward() -> None:
    clock, _ = manual_clock(floor=Timestamp(START_US, MAX_LOGICAL - 1))
    assert pair(clock.now()) == (START_US, MAX_LOGICAL)
    assert pair(clock.now()) == (START_US + 1, 0)


def test_floor_is_strictly_below_everything_handed_out() -> None:
    floor = Timestamp(START_US + 10_000, 3, node=1)
    clock, physical = manual_clock(floor=floor)
    assert clock.last().to_int() == floor.to_int()
    first = clock.now()
    assert first > floor
    assert pair(first) == (START_US + 10_000, 4)
    physical.advance(20_000)
    assert pair(clock.now()) == (START_US + 20_000, 0)


def test_backward_jumps_never_move_timestamps_back_and_are_counted() -> None:
    clock, physical = manual_clock()
    stamps = [clock.now()]
    for delta in (-1_000, -5, 2_000, -10_000):
        physical.advance(delta)
        stamps.append(clock.now())
        stamps.append(clock.now())
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert clock.backward_jumps == 3


def test_backward_jumps_below_the_tolerance_are_not_counted() -> None:
    physical = ManualClock(START_US)
    clock = Clock(physical_clock=physical, max_offset_us=500_000)
    clock.now()
    physical.advance(-40_000)  # default tolerance: max_offset_us / 10 = 50 ms
    clock.now()
    assert clock.backward_jumps == 0
    physical.advance(-60_000)
    clock.now()
    assert clock.backward_jumps == 1


def test_reserve_is_contiguous_disjoint_and_iterable() -> None:
    clock, _ = manual_clock()
    first = clock.reserve(5)
    second = clock.reserve(3)
    assert isinstance(first, TimestampRange)
    assert len(first) == 5
    assert list(first) == [Timestamp(START_US, i, NODE) for i in range(5)]
    assert first[0] == first.first and first[-1] == first.last == first[4]
    assert second.first.to_int() == first.last.to_int() + 1
    assert first.last in first and second.first not in first
    assert Timestamp(START_US, 0, NODE + 1) not in first
    assert "not a timestamp" not in first
    with pytest.raises(IndexError, match="out of range"):
        first[5]
    with pytest.raises(IndexError, match="out of range"):
        first[-6]
    assert clock.now() > second.last


def test_large_reservations_cross_microseconds_and_stay_ahead() -> None:
    clock, _ = manual_clock()
    big = clock.reserve(1_000_000)
    assert big.last.to_int() - big.first.to_int() == 999_999
    assert big.last.physical == START_US + 999_999 // (MAX_LOGICAL + 1)
    assert clock.last() == big.last
    assert clock.now() > big.last
    everything = clock.reserve(MAX_RESERVE)
    assert len(everything) == MAX_RESERVE


def test_reserve_round_trips_through_pickle_and_constructor() -> None:
    import pickle

    clock, _ = manual_clock()
    reserved = clock.reserve(10)
    assert pickle.loads(pickle.dumps(reserved)) == reserved
    assert TimestampRange(reserved.first, 10) == reserved


@pytest.mark.parametrize("n", [0, -1, MAX_RESERVE + 1, 2**64])
def test_reserve_out_of_range(n: int) -> None:
    clock, _ = manual_clock()
    before = clock.last()
    with pytest.raises(ValueError, match=r"n must|reserve count"):
        clock.reserve(n)
    assert clock.last() == before


def test_several_threads_get_unique_per_thread_increasing_timestamps() -> None:
    clock = Clock(node=2)
    per_thread = 20_000
    results: list[list[Timestamp]] = []
    barrier = threading.Barrier(4)

    def hammer() -> None:
        barrier.wait()
        stamps = [clock.now() for _ in range(per_thread)]
        stamps.extend(clock.reserve(3))
        results.append(stamps)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    for stamps in results:
        assert all(a < b for a, b in itertools.pairwise(stamps))
    everything = [ts for stamps in results for ts in stamps]
    assert len(set(everything)) == len(everything) == 4 * (per_thread + 3)


def test_system_clock_tracks_wall_time() -> None:
    import time

    clock = Clock()
    before = time.time_ns() // 1000
    ts = clock.now()
    after = time.time_ns() // 1000
    assert before <= ts.physical <= after + 1
    assert isinstance(clock.physical_clock, SystemClock)
    assert abs(SystemClock().now_us() - time.time_ns() // 1000) < 1_000_000


def test_clock_properties() -> None:
    physical = ManualClock(5)
    clock = Clock(node=9, max_offset_us=1234, physical_clock=physical)
    assert (clock.node, clock.max_offset_us) == (9, 1234)
    assert clock.physical_clock is physical
    assert clock.physical_now() == 5
    assert clock.last() == Timestamp(0, 0, 9)
    assert Clock.MAX_RESERVE == MAX_RESERVE
    assert "node=9" in repr(clock)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"node": 65_536}, ValueError, "node"),
        ({"node": -1}, ValueError, "node"),
        ({"node": "a"}, TypeError, "node"),
        ({"max_offset_us": -1}, ValueError, "max_offset_us"),
        ({"max_offset_us": 0.5}, TypeError, "max_offset_us"),
        ({"physical_clock": object()}, TypeError, "physical_clock"),
        ({"physical_clock": lambda: 5}, TypeError, "physical_clock"),
        ({"floor": 5}, TypeError, "floor"),
        ({"backward_jump_tolerance_us": -1}, ValueError, "backward_jump_tolerance_us"),
    ],
)
def test_clock_constructor_bad_input(kwargs: dict[str, Any], error: type, field: str) -> None:
    with pytest.raises(error, match=field):
        Clock(**kwargs)


def test_clock_method_bad_input() -> None:
    clock, _ = manual_clock()
    before = clock.now()
    with pytest.raises(TypeError, match=r"^remote must be a Timestamp, got NoneType$"):
        clock.update(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^remote must be a Timestamp, got int$"):
        clock.update(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^remote must be a Timestamp, got tuple$"):
        clock.update((START_US, 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^first must be a Timestamp, got NoneType$"):
        TimestampRange(None, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n"):
        clock.reserve(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n"):
        clock.reserve("3")  # type: ignore[arg-type]
    assert clock.last() == before


def test_manual_clock_bad_input_and_steps() -> None:
    physical = ManualClock(10)
    assert physical.advance(-10) == 0
    with pytest.raises(ValueError, match="physical clock"):
        physical.advance(-1)
    assert physical.now_us() == 0
    with pytest.raises(ValueError, match="us"):
        physical.set(-1)
    with pytest.raises(ValueError, match="us"):
        physical.set(2**64)
    with pytest.raises(ValueError, match="physical clock"):
        physical.set(2**62)
    with pytest.raises(TypeError, match="us"):
        physical.advance("5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_us"):
        ManualClock(-5)
    physical.set(42)
    assert physical.now_us() == 42


def test_exhausted_timestamp_space_is_an_error_not_a_wrap() -> None:
    from hlc_oracle import MAX_PHYSICAL

    clock, _ = manual_clock(floor=Timestamp(MAX_PHYSICAL, MAX_LOGICAL))
    with pytest.raises(HlcError, match="largest representable"):
        clock.now()
    assert clock.last() == Timestamp(MAX_PHYSICAL, MAX_LOGICAL, NODE)
