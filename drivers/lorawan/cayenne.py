"""Cayenne LPP payloads: ``channel(1) type(1) value(big-endian)`` records.

The standard type set of myDevicesIoT/CayenneLPP. Values are scaled to
engineering units (UCUM-style unit strings, as in the device profiles);
multi-axis types and GPS give a dict. An unknown type or a record cut short
raises :class:`~cityedge.drivers.base.DecodeError`, since the rest of the
payload cannot be framed without knowing the length.
"""

from __future__ import annotations

from typing import NamedTuple

from cityedge.drivers.base import DecodeError


class Field(NamedTuple):
    """One number in a record: key ("" for a scalar type), size, sign, divisor, unit."""

    key: str
    size: int
    signed: bool
    divisor: int
    unit: str


class LppType(NamedTuple):
    """One LPP data type and the numbers in its value."""

    name: str
    fields: tuple[Field, ...]

    @property
    def unit(self) -> str:
        """The unit of the value (of lat and lon for GPS, whose alt is in m)."""
        return self.fields[0].unit

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fields)


def _one(name: str, unit: str, size: int, signed: bool, divisor: int) -> LppType:
    return LppType(name, (Field("", size, signed, divisor, unit),))


def _xyz(name: str, unit: str, divisor: int) -> LppType:
    return LppType(name, tuple(Field(axis, 2, True, divisor, unit) for axis in "xyz"))


TYPES: dict[int, LppType] = {
    0: _one("digital_input", "", 1, False, 1),
    1: _one("digital_output", "", 1, False, 1),
    2: _one("analog_input", "", 2, True, 100),
    3: _one("analog_output", "", 2, True, 100),
    101: _one("illuminance", "lx", 2, False, 1),
    102: _one("presence", "", 1, False, 1),
    103: _one("temperature", "Cel", 2, True, 10),
    104: _one("humidity", "%", 1, False, 2),
    113: _xyz("accelerometer", "[g]", 1000),
    115: _one("barometer", "hPa", 2, False, 10),
    134: _xyz("gyrometer", "deg/s", 100),
    136: LppType(
        "gps",
        (
            Field("lat", 3, True, 10000, "deg"),
            Field("lon", 3, True, 10000, "deg"),
            Field("alt", 3, True, 100, "m"),
        ),
    ),
}

LppValue = int | float | dict[str, float]


class LppRecord(NamedTuple):
    """One decoded record."""

    channel: int
    type: str
    value: LppValue
    unit: str

    def points(self) -> list[tuple[str, int | float, str]]:
        """Scalar ``(name, value, unit)`` triples, e.g. ``gps.alt`` in m, for readings."""
        if not isinstance(self.value, dict):
            return [(self.type, self.value, self.unit)]
        kind = next(t for t in TYPES.values() if t.name == self.type)
        return [(f"{self.type}.{f.key}", self.value[f.key], f.unit) for f in kind.fields]


def _scaled(raw: bytes, signed: bool, divisor: int) -> int | float:
    number = int.from_bytes(raw, "big", signed=signed)
    # True division gives the double nearest the exact quotient: 272 / 10 == 27.2.
    return number if divisor == 1 else number / divisor


def _value(kind: LppType, raw: bytes) -> LppValue:
    parts: dict[str, float] = {}
    pos = 0
    for field in kind.fields:
        scaled = _scaled(raw[pos : pos + field.size], field.signed, field.divisor)
        if not field.key:
            return scaled
        parts[field.key] = float(scaled)
        pos += field.size
    return parts


def decode_lpp(payload: bytes) -> list[LppRecord]:
    """Decode every record of a Cayenne LPP payload (an empty payload has none)."""
    records: list[LppRecord] = []
    pos = 0
    while pos < len(payload):
        if pos + 2 > len(payload):
            raise DecodeError("truncated", f"record header cut short at byte {pos}")
        channel, code = payload[pos], payload[pos + 1]
        kind = TYPES.get(code)
        if kind is None:
            raise DecodeError("unknown_type", f"LPP type {code} at byte {pos + 1}")
        end = pos + 2 + kind.size
        if end > len(payload):
            raise DecodeError("truncated", f"{kind.name} on channel {channel} cut short")
        records.append(
            LppRecord(channel, kind.name, _value(kind, payload[pos + 2 : end]), kind.unit)
        )
        pos = end
    return records
