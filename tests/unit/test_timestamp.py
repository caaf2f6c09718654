"""Timestamp: construction, total order, every lossless encoding, and bad input."""

import datetime
import pickle
from typing import Any

import pytest
from hlc_oracle import MAX_LOGICAL, MAX_NODE, MAX_PHYSICAL, HlcError, Timestamp
from hypothesis import given
from hypothesis import strategies as st

from tests.support.models import hlc as model

physicals = st.integers(0, MAX_PHYSICAL)
logicals = st.integers(0, MAX_LOGICAL)
nodes = st.integers(0, MAX_NODE)
fields = st.tuples(physicals, logicals, nodes)


def make(parts: tuple[int, int, int]) -> Timestamp:
    return Timestamp(*parts)


def test_fields_and_defaults() -> None:
    ts = Timestamp(1_795_269_099_671_261)
    assert (ts.physical, ts.logical, ts.node) == (1_795_269_099_671_261, 0, 0)
    ts = Timestamp(5, 6, node=7)
    assert (ts.physical, ts.logical, ts.node) == (5, 6, 7)
    assert repr(ts) == "Timestamp(physical=5, logical=6, node=7)"


def test_is_immutable() -> None:
    ts = Timestamp(1, 2, 3)
    with pytest.raises(AttributeError):
        ts.physical = 5  # type: ignore[misc]


@given(fields, fields)
def test_order_is_physical_logical_node(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    ta, tb = make(a), make(b)
    assert (ta < tb) == (a < b)
    assert (ta <= tb) == (a <= b)
    assert (ta > tb) == (a > b)
    assert (ta >= tb) == (a >= b)
    assert (ta == tb) == (a == b)
    assert (ta != tb) == (a != b)
    assert (ta.to_bytes() < tb.to_bytes()) == (a < b)
    if a[2] == b[2]:
        assert (ta.to_int() < tb.to_int()) == (a < b)


def test_same_physical_and_logical_from_two_nodes_are_not_equal() -> None:
    assert Timestamp(10, 1, 1) != Timestamp(10, 1, 2)
    assert Timestamp(10, 1, 1) < Timestamp(10, 1, 2)
    assert len({Timestamp(10, 1, 1), Timestamp(10, 1, 2), Timestamp(10, 1, 1)}) == 2


@given(fields)
def test_round_trips(parts: tuple[int, int, int]) -> None:
    ts = make(parts)
    physical, logical, node = parts
    assert Timestamp.from_int(ts.to_int(), node=node) == ts
    assert Timestamp.from_bytes(ts.to_bytes()) == ts
    assert Timestamp.parse(str(ts)) == ts
    assert pickle.loads(pickle.dumps(ts)) == ts
    assert eval(repr(ts), {"Timestamp": Timestamp}) == ts
    assert hash(Timestamp(*parts)) == hash(ts)
    # The Rust encodings agree with independent pure-Python ones.
    assert ts.to_int() == model.to_int(physical, logical)
    assert ts.to_bytes() == model.to_bytes(physical, logical, node)
    assert str(ts) == model.to_text(physical, logical, node)
    assert model.parse_text(str(ts)) == parts


def test_to_datetime_is_utc_with_microseconds() -> None:
    ts = Timestamp(1_795_269_099_671_261, 4, 2)
    expected = datetime.datetime(2026, 11, 21, 13, 51, 39, 671_261, tzinfo=datetime.UTC)
    assert ts.to_datetime() == expected
    assert str(ts) == "2026-11-21T13:51:39.671261Z/4@2"
    assert Timestamp(MAX_PHYSICAL).to_datetime().year == 2112


def test_bytes_are_fixed_width() -> None:
    assert (
        len(Timestamp(0).to_bytes())
        == len(Timestamp(MAX_PHYSICAL, MAX_LOGICAL, MAX_NODE).to_bytes())
        == 10
    )


def test_int_form_spans_64_bits() -> None:
    top = Timestamp(MAX_PHYSICAL, MAX_LOGICAL)
    assert top.to_int() == 2**64 - 1
    assert Timestamp.from_int(2**64 - 1) == top


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1,), "physical"),
        ((MAX_PHYSICAL + 1,), "physical"),
        ((2**64,), "physical"),
        ((2**200,), "physical"),
        ((0, -1), "logical"),
        ((0, MAX_LOGICAL + 1), "logical"),
        ((0, 0, MAX_NODE + 1), "node"),
        ((0, 0, -5), "node"),
    ],
)
def test_out_of_range_fields_raise_value_error_naming_the_field(
    args: tuple[int, ...], field: str
) -> None:
    bound = {"physical": MAX_PHYSICAL, "logical": MAX_LOGICAL, "node": MAX_NODE}[field]
    value = args[-1]
    # The field's own bound (2**52 for physical), whether or not the value fits in 64 bits.
    with pytest.raises(ValueError, match=rf"^{field} must be in 0\.\.={bound}\b.*, got {value}$"):
        Timestamp(*args)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("1",), "physical"),
        ((1.5,), "physical"),
        ((None,), "physical"),
        ((True,), "physical"),
        ((1, "2"), "logical"),
        ((1, 2, 3.0), "node"),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(TypeError, match=field):
        Timestamp(*args)


def test_from_int_bad_input() -> None:
    with pytest.raises(ValueError, match="value"):
        Timestamp.from_int(-1)
    with pytest.raises(ValueError, match="value"):
        Timestamp.from_int(2**64)
    with pytest.raises(ValueError, match="node"):
        Timestamp.from_int(1, node=MAX_NODE + 1)
    with pytest.raises(TypeError, match="value"):
        Timestamp.from_int("1")  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 9, 11, 16])
def test_from_bytes_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        Timestamp.from_bytes(b"\x00" * length)


def test_from_bytes_wrong_type() -> None:
    with pytest.raises(TypeError, match="bytes"):
        Timestamp.from_bytes("0123456789")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-11-21T13:51:39.671261Z",
        "2026-11-21T13:51:39.671261Z/4",
        "2026-11-21T13:51:39Z/4@2",
        "2026-11-21T13:51:39.671261/4@2",
        "2026-11-21T13:51:39.671261Z/-4@2",
        "2026-11-21T13:51:39.671261Z/+4@2",
        "2026-11-21T13:51:39.671261Z/4@65536",
        "2026-11-21T13:51:39.671261Z/4096@2",
        "2026-13-21T13:51:39.671261Z/4@2",
        "1969-12-31T23:59:59.999999Z/0@0",
        "2200-01-01T00:00:00.000000Z/0@0",
        " 2026-11-21T13:51:39.671261Z/4@2",
    ],
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Timestamp.parse(text)


# Text that names a timestamp another (canonical) text already names, and what the error says.
NON_CANONICAL_TEXT = [
    ("2016-12-31T23:59:60.000000Z/0@0", "leap second"),
    ("2026-11-21T13:51:60.671261Z/4@2", "leap second"),
    ("2026-11-21T13:51:39.671261Z/04@2", "logical has a leading zero"),
    ("2026-11-21T13:51:39.671261Z/00@2", "logical has a leading zero"),
    ("2026-11-21T13:51:39.671261Z/4@002", "node has a leading zero"),
    ("2026-11-21T13:51:39.671261Z/04@002", "node has a leading zero"),
    ("2026-11-21T13:51:39.671261Z/4@", "node is empty"),
    ("2026-11-21T13:51:39.671261Z/4@0x2", "node is not a decimal number"),
    ("2026-11-21T13:51:39.671261Z/4@\uff12", "node is not a decimal number"),  # fullwidth 2
    ("2026-11-21T13:51:39.6712610Z/4@2", "date-time"),
    ("2026-11-21t13:51:39.671261Z/4@2", "date-time"),
    ("2026-11-21T13:51:39.671261z/4@2", "date-time"),
]


@pytest.mark.parametrize(("text", "problem"), NON_CANONICAL_TEXT)
def test_parse_rejects_non_canonical_text_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Timestamp.parse(text)


digit_runs = st.text("0123456789", min_size=1, max_size=5)


@given(
    st.tuples(
        st.sampled_from(["1970", "2016", "2026", "2112"]),
        digit_runs,
        digit_runs,
        digit_runs,
        digit_runs,
        digit_runs,
        digit_runs,
        digit_runs,
        digit_runs,
    )
)
def test_whatever_parses_prints_back_unchanged(parts: tuple[str, ...]) -> None:
    # Fields of any width (leading zeros, second 60, day 31 of a short month, ...): either the
    # text is refused, or it is the one text of its timestamp.
    year, month, day, hour, minute, second, fraction, logical, node = parts
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}.{fraction}Z/{logical}@{node}"
    try:
        ts = Timestamp.parse(text)
    except ValueError:
        return
    assert str(ts) == text


@pytest.mark.parametrize(
    ("text", "index"),
    [("\ud800", 0), ("2026-11-21T13:51:39.671261Z/4@2\udfff", 31), ("a\udc80b\ud800", 1)],
)
def test_parse_of_a_str_with_a_lone_surrogate_is_a_value_error(text: str, index: int) -> None:
    with pytest.raises(ValueError, match=f"lone surrogate at index {index}"):
        Timestamp.parse(text)


def test_parse_error_echoes_only_the_start_of_long_text() -> None:
    with pytest.raises(ValueError) as info:
        Timestamp.parse("x" * 100_000)
    message = str(info.value)
    assert f'"{"x" * 64}"... (100000 bytes)' in message
    assert len(message) < 300
    with pytest.raises(ValueError) as info:
        Timestamp.parse("\ud800" * 100_000)
    assert len(str(info.value)) < 500


def test_parse_wrong_type() -> None:
    with pytest.raises(TypeError, match="str"):
        Timestamp.parse(b"2026-11-21T13:51:39.671261Z/4@2")  # type: ignore[arg-type]


def test_comparison_with_other_types() -> None:
    ts = Timestamp(1)
    assert ts != 1
    assert ts != "2026"
    with pytest.raises(TypeError):
        _ = ts < 1  # type: ignore[operator]


def test_value_errors_are_not_hlc_errors() -> None:
    # Bad arguments use the built-in types so callers can catch them the usual way.
    with pytest.raises(ValueError) as info:
        Timestamp(-1)
    assert not isinstance(info.value, HlcError)
