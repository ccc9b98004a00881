"""The pure Modbus codec against the published vectors, and its properties."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.modbus.codec import (
    EncodeError,
    decode_point,
    encode_point,
    encode_value,
    resolve_order,
)
from cityedge.profiles import ORDERS, WORDS, Point, WriteRange

VECTORS = json.loads(Path("/work/shared/vectors/modbus_encodings.json").read_text())
WIRE = [0xAABB, 0xCCDD]
NUMERIC = ["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]
ALL_ORDERS = [o for names in ORDERS.values() for o in names]


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=lambda v: v["order"])
def test_32_bit_vectors(vec: dict[str, object]) -> None:
    """Each published 32-bit vector decodes from wire bytes AABBCCDD."""
    for kind in ("int32", "uint32", "float32"):
        if kind in vec:
            got = decode_point(Point("p", "holding", 0, kind, order=str(vec["order"])), WIRE)
            assert math.isclose(got, vec[kind], rel_tol=1e-7)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_16_bit_vectors(order: str) -> None:
    """The published int16 vectors decode from wire bytes ABCD."""
    assert (
        decode_point(Point("p", "input", 0, "int16", order=order), [0xABCD])
        == VECTORS["int16"][order]
    )


def test_orders_narrow_and_widen() -> None:
    """A profile-wide order maps to the same swaps at every width."""
    assert resolve_order("ABCD", 2) == "AB"
    assert resolve_order("BADC", 2) == "BA"
    assert resolve_order("CDAB", 8) == "GHEFCDAB"
    assert resolve_order("HGFEDCBA", 4) == "DCBA"
    p = Point("p", "holding", 0, "float64", order="CDAB")
    assert decode_point(p, [0x0000, 0x0000, 0x0000, 0x3FF8]) == 1.5


def test_string_bitfield_bool_scale() -> None:
    """Strings strip NULs and spaces, bitfields mask, bools and scaling apply."""
    s = Point("s", "holding", 0, "string", length=4)
    assert decode_point(s, [0x4142, 0x4320, 0x0000, 0x0000]) == "ABC"
    assert decode_point(Point("s", "holding", 0, "string", length=1, order="BA"), [0x4241]) == "AB"
    bf = Point("b", "holding", 0, "bitfield", bits=(4, 7))
    assert decode_point(bf, [0x00A5]) == 0xA
    assert decode_point(Point("c", "coil", 0, "bool"), [1]) is True
    assert decode_point(
        Point("t", "input", 0, "int16", scale=0.1, offset=-40), [650]
    ) == pytest.approx(25.0)


@pytest.mark.parametrize("words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_nan_and_inf_are_invalid(words: list[int]) -> None:
    """NaN and infinite floats are rejected as invalid_value."""
    with pytest.raises(DecodeError) as info:
        decode_point(Point("f", "input", 0, "float32"), words)
    assert info.value.reason == "invalid_value"


def test_non_ascii_string_and_short_input_are_rejected() -> None:
    """Non-ASCII strings and a wrong register count raise DecodeError."""
    with pytest.raises(DecodeError):
        decode_point(Point("s", "holding", 0, "string", length=1), [0xC3A9])
    with pytest.raises(DecodeError):
        decode_point(Point("u", "holding", 0, "uint32"), [1])


def test_encode_point_checks_the_write_range() -> None:
    """encode_point refuses read-only points and values outside the write range."""
    setpoint = Point("sp", "holding", 0, "int16", scale=0.1, write=WriteRange(5.0, 30.0))
    assert encode_point(setpoint, 21.5) == [215]
    with pytest.raises(EncodeError, match="out_of_range"):
        encode_point(setpoint, 31.0)
    with pytest.raises(EncodeError, match="read_only"):
        encode_point(Point("v", "input", 0, "float32"), 1.0)
    with pytest.raises(EncodeError, match="bad_value"):
        encode_point(setpoint, "hot")
    assert encode_point(Point("r", "coil", 0, "bool", write=WriteRange(0, 1)), True) == [1]


point_strategy = st.builds(
    lambda kind, order, register, length, low, width: Point(
        "p",
        register if kind != "bool" else "coil",
        0,
        kind,
        order=order,
        length=length,
        bits=(low, min(15, low + width)),
    ),
    st.sampled_from([*NUMERIC, "string", "bitfield", "bool"]),
    st.sampled_from(ALL_ORDERS),
    st.sampled_from(["holding", "input"]),
    st.integers(1, 6),
    st.integers(0, 15),
    st.integers(0, 15),
)


@given(point_strategy, st.lists(st.integers(-(2**17), 2**17), max_size=8))
def test_decode_raises_only_decode_error(point: Point, registers: list[int]) -> None:
    """Arbitrary register lists either decode or raise DecodeError, nothing else."""
    with contextlib.suppress(DecodeError):
        decode_point(point, registers)


@given(
    st.sampled_from(NUMERIC),
    st.sampled_from(ALL_ORDERS),
    st.data(),
)
def test_encode_decode_round_trip(kind: str, order: str, data: st.DataObject) -> None:
    """Any value of a numeric type survives encode then decode, in every byte order."""
    point = Point("p", "holding", 0, kind, order=order)
    if kind.startswith("float"):
        value: float = data.draw(
            st.floats(allow_nan=False, allow_infinity=False, width=int(kind[5:]))
        )
    else:
        bits = WORDS[kind] * 16
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if kind[0] == "i" else (0, 2**bits - 1)
        value = data.draw(st.integers(lo, hi))
    words = encode_value(point, value)
    assert len(words) == point.words
    got = decode_point(point, words)
    if kind == "float32":  # the same float32, printed shortest
        assert isinstance(got, float) and struct.pack(">f", got) == struct.pack(">f", value)
    else:
        assert got == value


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8))
def test_string_round_trip(text: str) -> None:
    """ASCII strings round-trip (trailing NUL padding is stripped)."""
    point = Point("s", "holding", 0, "string", length=4)
    assert decode_point(point, encode_value(point, text)) == text


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_prints_as_the_device_meant(x: float) -> None:
    """A float32 comes out as the shortest decimal of the same float32, never widened noise."""
    from cityedge.drivers.modbus.codec import shortest_float32

    y = shortest_float32(x)
    assert struct.pack(">f", y) == struct.pack(">f", x)
    assert len(repr(y)) <= max(len(repr(x)), 16)


def test_scaled_integers_have_no_binary_artefacts() -> None:
    """A register of 2301 scaled by 0.1 reads 230.1, not 230.10000000000002."""
    p = Point("v", "holding", 0, "uint16", scale=0.1)
    assert decode_point(p, [2301]) == 230.1
