"""Point values to and from Modbus registers. Pure: no I/O, no clock.

Registers are 16-bit words, big-endian on the wire, so a list of registers
is a string of *wire bytes*. Multi-byte values name their byte order by the
order in which the value's bytes appear on the wire, A being the most
significant (Telegraf's convention): for wire bytes ``AA BB CC DD``,
``CDAB`` decodes to ``0xCCDDAABB``. See ``/work/shared/vectors``.

A point's ``order`` may be written for another width (a profile-wide
``ABCD`` used on a 16-bit point): it is narrowed or widened by its two
properties, word swap and byte swap, so ``CDAB`` on 64 bits is
``GHEFCDAB`` and ``BADC`` on 16 bits is ``BA``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from cityedge.drivers.base import DecodeError
from cityedge.profiles import BIT_REGISTERS, ORDERS, Point, scale_value
from cityedge.readings import Value

_FORMATS: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}
_LETTERS = "ABCDEFGH"


class EncodeError(ValueError):
    """A value cannot be written to a point. ``reason`` is a short slug."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _swaps(order: str) -> tuple[bool, bool]:
    """(word swap, byte swap) of a known order name of any width."""
    for names in ORDERS.values():
        if order in names:
            index = names.index(order)
            return index in (1, 3), index in (2, 3)
    raise DecodeError("bad_order", f"unknown byte order {order!r}")


def resolve_order(order: str, nbytes: int) -> str:
    """The order name for a value of ``nbytes`` bytes (2, 4 or 8)."""
    if len(order) == nbytes and order in ORDERS[nbytes]:
        return order
    word_swap, byte_swap = _swaps(order)
    names = ORDERS[nbytes]
    if nbytes == 2:
        return names[1] if byte_swap else names[0]
    return names[(1 if word_swap else 0) + (2 if byte_swap else 0)]


def _value_bytes(wire: bytes, order: str) -> bytes:
    """Reorder wire bytes into the value's big-endian bytes."""
    return bytes(wire[order.index(letter)] for letter in _LETTERS[: len(wire)])


def _wire_bytes(value: bytes, order: str) -> bytes:
    """Inverse of :func:`_value_bytes`."""
    return bytes(value[_LETTERS.index(letter)] for letter in order)


def _registers_to_bytes(registers: Sequence[int]) -> bytes:
    for reg in registers:
        if not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            raise DecodeError("bad_register", f"not a 16-bit register: {reg!r}")
    return b"".join(reg.to_bytes(2, "big") for reg in registers)


def _bytes_to_registers(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _scaled(point: Point, raw: int | float) -> int | float:
    value = scale_value(raw, point.scale, point.offset)
    if not math.isfinite(value):
        raise DecodeError("invalid_value", f"{point.name}: {value}")
    return value


def shortest_float32(x: float) -> float:
    """The shortest decimal that is still the same float32.

    A float32 widened to a double prints as 230.3641357421875 where the
    device meant 230.36414; the hub should see what the device sent.
    """
    want = struct.pack(">f", x)
    for digits in range(6, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack(">f", y) == want:
            return y
    return x


def _decode_string(point: Point, wire: bytes) -> str:
    if resolve_order(point.order, 2) == "BA":
        wire = b"".join(wire[i : i + 2][::-1] for i in range(0, len(wire), 2))
    try:
        text = wire.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_string", f"{point.name}: not ASCII") from exc
    return text.strip("\x00 ")


def decode_point(point: Point, values: Sequence[int]) -> Value:
    """The engineering value of ``point`` from its registers (or its one bit).

    Raises :class:`DecodeError` (and nothing else) on malformed input, a
    NaN or infinite float, or a non-ASCII string.
    """
    if len(values) != point.words:
        raise DecodeError("short_response", f"{point.name}: {len(values)} != {point.words}")
    if point.register in BIT_REGISTERS:
        if values[0] not in (0, 1):
            raise DecodeError("bad_register", f"not a bit: {values[0]!r}")
        return bool(values[0])
    wire = _registers_to_bytes(values)
    if point.type == "string":
        return _decode_string(point, wire)
    if point.type == "bool":
        return any(wire)
    if point.type == "bitfield":
        reg = int.from_bytes(_value_bytes(wire, resolve_order(point.order, 2)), "big")
        low, high = point.bits if point.bits is not None else (0, 15)
        if not 0 <= low <= high <= 15:
            raise DecodeError("bad_bits", f"{point.name}: {point.bits}")
        return _scaled(point, (reg >> low) & ((1 << (high - low + 1)) - 1))
    fmt = _FORMATS.get(point.type)
    if fmt is None:
        raise DecodeError("bad_type", f"{point.name}: {point.type}")
    (raw,) = struct.unpack(fmt, _value_bytes(wire, resolve_order(point.order, len(wire))))
    if isinstance(raw, float) and not math.isfinite(raw):
        raise DecodeError("invalid_value", f"{point.name}: {raw}")
    if point.type == "float32":
        raw = shortest_float32(raw)
    return _scaled(point, raw)


def _raw_number(point: Point, value: int | float) -> int | float:
    raw = (value - point.offset) / point.scale
    if point.type.startswith("float"):
        return raw
    return round(raw)


def encode_value(point: Point, value: Value) -> list[int]:
    """Registers (or one bit, 0/1) holding ``value``; no write-range check.

    Raises :class:`EncodeError` when the value does not fit the point's type.
    """
    if point.register in BIT_REGISTERS:
        return [1 if value else 0]
    if point.type == "string":
        if not isinstance(value, str) or not value.isascii():
            raise EncodeError("bad_value", f"{point.name}: not an ASCII string")
        wire = value.encode("ascii")
        if len(wire) > 2 * point.length:
            raise EncodeError("out_of_range", f"{point.name}: longer than {2 * point.length}")
        wire = wire.ljust(2 * point.length, b"\x00")
        if resolve_order(point.order, 2) == "BA":
            wire = b"".join(wire[i : i + 2][::-1] for i in range(0, len(wire), 2))
        return _bytes_to_registers(wire)
    if point.type == "bool":
        return [1 if value else 0]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise EncodeError("bad_value", f"{point.name}: not a number: {value!r}")
    raw = _raw_number(point, value) if (point.scale, point.offset) != (1, 0) else value
    if point.type == "bitfield":
        low, high = point.bits if point.bits is not None else (0, 15)
        field = round(raw)
        if not 0 <= field < (1 << (high - low + 1)):
            raise EncodeError("out_of_range", f"{point.name}: {value!r}")
        word = (field << low).to_bytes(2, "big")
        return _bytes_to_registers(_wire_bytes(word, resolve_order(point.order, 2)))
    fmt = _FORMATS[point.type]
    if not point.type.startswith("float"):
        raw = round(raw)
    try:
        packed = struct.pack(fmt, raw)
    except (struct.error, OverflowError) as exc:
        raise EncodeError("out_of_range", f"{point.name}: {value!r}") from exc
    return _bytes_to_registers(_wire_bytes(packed, resolve_order(point.order, len(packed))))


def encode_point(point: Point, value: Value) -> list[int]:
    """Registers to write ``value`` to a writable point, range-checked.

    Raises :class:`EncodeError`: ``read_only`` if the point has no ``write``
    range, ``out_of_range`` outside it or outside the type.
    """
    if point.write is None or point.register not in ("coil", "holding"):
        raise EncodeError("read_only", point.name)
    if point.register == "coil" or point.type == "bool":
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EncodeError("bad_value", f"{point.name}: {value!r}")
    elif not isinstance(value, int | float) or isinstance(value, bool):
        raise EncodeError("bad_value", f"{point.name}: {value!r}")
    number = float(value)
    if not (math.isfinite(number) and point.write.min <= number <= point.write.max):
        raise EncodeError("out_of_range", f"{point.name}: {value!r} not in write range")
    return encode_value(point, value)
