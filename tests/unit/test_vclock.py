"""VectorClock: the happens-before laws (hypothesis, against the dict model), the byte and dict
forms, the Python protocols, and bad input."""

import copy
import enum
import pickle

import pytest
from hlc_oracle import MAX_NODE, Ordering, VectorClock
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.models import vclock as model

ORDERING = {
    model.BEFORE: Ordering.BEFORE,
    model.AFTER: Ordering.AFTER,
    model.EQUAL: Ordering.EQUAL,
    model.CONCURRENT: Ordering.CONCURRENT,
}

# Few nodes and small counters, so that equal, ordered and concurrent pairs are all common.
entries = st.dictionaries(st.integers(0, 4), st.integers(0, 3), max_size=5)
wide_entries = st.dictionaries(st.integers(0, MAX_NODE), st.integers(0, 2**64 - 1), max_size=40)


def clock(counters: dict[int, int]) -> VectorClock:
    return VectorClock(counters)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({}, {}, Ordering.EQUAL),
        ({1: 1}, {}, Ordering.AFTER),
        ({}, {1: 1}, Ordering.BEFORE),
        ({1: 1, 2: 2}, {1: 2, 2: 2}, Ordering.BEFORE),
        ({1: 2}, {2: 1}, Ordering.CONCURRENT),
        ({1: 2, 2: 1}, {1: 1, 2: 2}, Ordering.CONCURRENT),
        ({1: 3, 2: 0}, {1: 3}, Ordering.EQUAL),
        ({0: 1, MAX_NODE: 2**64 - 1}, {0: 1}, Ordering.AFTER),
    ],
)
def test_compare_table(a: dict[int, int], b: dict[int, int], expected: Ordering) -> None:
    result = clock(a).compare(clock(b))
    assert result is expected
    assert clock(a).happens_before(clock(b)) == (expected is Ordering.BEFORE)
    assert clock(a).concurrent_with(clock(b)) == (expected is Ordering.CONCURRENT)
    assert clock(a).dominates(clock(b)) == (expected in (Ordering.AFTER, Ordering.EQUAL))


@settings(max_examples=300)
@given(entries, entries)
def test_compare_matches_model_and_operators_are_the_partial_order(
    a: dict[int, int], b: dict[int, int]
) -> None:
    x, y = clock(a), clock(b)
    ordering = x.compare(y)
    reference = model.DictVectorClock(a)
    assert ordering is ORDERING[reference.compare(model.DictVectorClock(b))]
    assert ordering is ORDERING[reference.compare_with_any(model.DictVectorClock(b))]
    assert (x == y) == (ordering is Ordering.EQUAL)
    assert (x != y) == (ordering is not Ordering.EQUAL)
    assert (x < y) == (ordering is Ordering.BEFORE)
    assert (x > y) == (ordering is Ordering.AFTER)
    assert (x <= y) == (ordering in (Ordering.BEFORE, Ordering.EQUAL))
    assert (x >= y) == (ordering in (Ordering.AFTER, Ordering.EQUAL))
    if ordering is Ordering.CONCURRENT:
        assert not (x < y or x > y or x <= y or x >= y)


@settings(max_examples=200)
@given(entries, entries)
def test_compare_is_antisymmetric_and_concurrency_symmetric(
    a: dict[int, int], b: dict[int, int]
) -> None:
    x, y = clock(a), clock(b)
    reverse = {
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert y.compare(x) is reverse[x.compare(y)]
    assert x.concurrent_with(y) == y.concurrent_with(x)
    if x <= y and y <= x:
        assert x == y


def merged(*clocks: VectorClock) -> VectorClock:
    result = VectorClock()
    for other in clocks:
        result.merge(other)
    return result


@settings(max_examples=200)
@given(entries, entries, entries)
def test_merge_is_commutative_associative_idempotent(
    a: dict[int, int], b: dict[int, int], c: dict[int, int]
) -> None:
    x, y, z = clock(a), clock(b), clock(c)
    assert merged(x, y) == merged(y, x)
    xy = x.copy()
    xy.merge(y)
    xy_z = xy.copy()
    xy_z.merge(z)
    yz = y.copy()
    yz.merge(z)
    x_yz = x.copy()
    x_yz.merge(yz)
    assert xy_z == x_yz
    twice = x.copy()
    twice.merge(x)
    assert twice == x
    # The merge is the least upper bound, and matches the model pointwise.
    assert xy >= x and xy >= y
    reference = model.DictVectorClock(a)
    reference.merge(model.DictVectorClock(b))
    assert xy.to_dict() == reference.counters


@settings(max_examples=200)
@given(wide_entries)
def test_bytes_and_dict_round_trip(counters: dict[int, int]) -> None:
    x = clock(counters)
    assert VectorClock.from_bytes(x.to_bytes()) == x
    assert VectorClock.from_dict(x.to_dict()) == x
    assert x.to_dict() == {node: count for node, count in counters.items() if count}
    assert dict(x) == x.to_dict()
    assert list(x) == sorted(x.to_dict().items())
    assert len(x) == len(x.to_dict())
    assert pickle.loads(pickle.dumps(x)) == x
    # Canonical: the same clock built another way has the same bytes.
    assert VectorClock(dict(reversed(list(counters.items())))).to_bytes() == x.to_bytes()


def test_bytes_are_compact() -> None:
    # Version byte, count, then (node gap, counter) varints: 2 bytes per small entry.
    assert VectorClock({1: 1, 2: 1, 3: 1}).to_bytes() == bytes([1, 3, 1, 1, 0, 1, 0, 1])
    assert len(VectorClock({n: 100 for n in range(32)}).to_bytes()) == 2 + 32 * 2


def test_increment_get_and_copy_are_independent() -> None:
    x = VectorClock()
    assert x.increment(5) == 1
    assert x.increment(5) == 2
    assert x.increment(0) == 1
    assert (x.get(5), x.get(0), x.get(9)) == (2, 1, 0)
    y = x.copy()
    y.increment(5)
    assert (x.get(5), y.get(5)) == (2, 3)
    assert copy.copy(x) == x and copy.deepcopy(x) == x and copy.copy(x) is not x
    assert x.happens_before(y) and y.dominates(x)
    x.merge(x)
    assert x.get(5) == 2
    assert repr(x) == "VectorClock({0: 1, 5: 2})"


def test_is_unhashable_because_mutable() -> None:
    with pytest.raises(TypeError):
        hash(VectorClock())


def test_comparison_with_other_types() -> None:
    assert VectorClock() != {}
    assert VectorClock() != None  # noqa: E711
    with pytest.raises(TypeError):
        _ = VectorClock() < 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("method", "argument", "received"),
    [
        ("compare", {}, "dict"),
        ("compare", None, "NoneType"),
        ("merge", {1: 2}, "dict"),
        ("merge", None, "NoneType"),
        ("happens_before", 1, "int"),
        ("concurrent_with", [], "list"),
        ("dominates", b"", "bytes"),
    ],
)
def test_wrong_argument_types_name_the_argument(
    method: str, argument: object, received: str
) -> None:
    clock = VectorClock({1: 2})
    with pytest.raises(TypeError, match=f"^other must be a VectorClock, got {received}$"):
        getattr(clock, method)(argument)
    assert clock.to_dict() == {1: 2}


def test_counter_overflow_leaves_the_clock_unchanged() -> None:
    x = VectorClock({3: 2**64 - 1})
    with pytest.raises(ValueError, match="counter of node 3"):
        x.increment(3)
    assert x.get(3) == 2**64 - 1


@pytest.mark.parametrize(
    ("node", "error", "message"),
    [
        (MAX_NODE + 1, ValueError, "node must be in 0..=65535, got 65536"),
        (-1, ValueError, "node must be in 0..=65535, got -1"),
        (2**64, ValueError, "node must be in 0..=65535, got 18446744073709551616"),
        ("1", TypeError, "node must be an int, got str"),
        (True, TypeError, "node must be an int, got bool"),
        (1.0, TypeError, "node must be an int, got float"),
    ],
)
def test_bad_node_ids(node: object, error: type[Exception], message: str) -> None:
    x = VectorClock({1: 1})
    for call in (x.increment, x.get):
        with pytest.raises(error, match=message):
            call(node)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        VectorClock({node: 1})  # type: ignore[dict-item]
    assert x.to_dict() == {1: 1}


@pytest.mark.parametrize(
    ("entries", "error", "message"),
    [
        ([(1, 2)], TypeError, "must be a dict of node id to counter, got list"),
        ({1: -1}, ValueError, "counter must be a non-negative integer"),
        ({1: 2**64}, ValueError, "counter must be a non-negative integer below 2"),
        ({1: "2"}, TypeError, "counter must be an int, got str"),
    ],
)
def test_bad_entries(entries: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        VectorClock.from_dict(entries)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        VectorClock(entries)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "offset 0: empty input"),
        (b"\x02\x00", "offset 0: unknown format version"),
        (b"\x01", "offset 1: truncated varint"),
        (b"\x01\x01\x01", "offset 2: entry count is larger"),
        (b"\x01\x01\x01\x80", "offset 3: truncated varint"),
        (b"\x01\x01\x01\x00", "offset 3: zero counter"),
        (b"\x01\x00\x00", "offset 2: trailing bytes"),
        (b"\x01\x05\x01\x01", "offset 2: entry count is larger"),
        (b"\x01\x01\x80\x80\x04\x01", "offset 2: node id out of range"),
        (b"\x01\x02\xff\xff\x03\x01\x00\x01", "offset 6: node id out of range"),
        (b"\x01\x01\x81\x00\x01", "offset 2: non-minimal varint"),
        (b"\x01\x01\x01" + b"\xff" * 9 + b"\x02", "offset 3: varint does not fit in 64 bits"),
    ],
)
def test_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VectorClock.from_bytes(data)


def test_from_bytes_needs_bytes() -> None:
    with pytest.raises(TypeError, match="vector clock bytes must be bytes, got str"):
        VectorClock.from_bytes("\x01\x00")  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=24))
def test_arbitrary_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        decoded = VectorClock.from_bytes(data)
    except ValueError:
        return
    # Whatever decodes is canonical: it encodes back to the same bytes.
    assert decoded.to_bytes() == data


def test_ordering_is_an_enum() -> None:
    assert isinstance(Ordering.BEFORE, enum.Enum)
    assert list(Ordering) == [Ordering.BEFORE, Ordering.AFTER, Ordering.EQUAL, Ordering.CONCURRENT]
    assert Ordering["CONCURRENT"] is Ordering("concurrent") is Ordering.CONCURRENT
    assert [o.name for o in Ordering] == ["BEFORE", "AFTER", "EQUAL", "CONCURRENT"]
    assert pickle.loads(pickle.dumps(Ordering.AFTER)) is Ordering.AFTER
    assert Ordering.__module__ == "hlc_oracle"
