"""OPC UA values to readings and back: pure functions, no I/O.

* :func:`quality_of` maps a 32-bit status code to a reading quality: the two
  severity bits decide (``00`` Good, ``01`` Uncertain, ``10``/``11`` Bad), the
  name comes from the code with its 16 info bits (limit, overflow) cleared.
* :func:`engineering_value` turns a variant value into what a reading
  carries (``raw * scale + offset`` for numbers); a Good or Uncertain
  status with no value at all (a null variant, as servers without
  diagnostics give for the diagnostics counters) is ``no_value``.
* :func:`monitoring_filter` builds the deadband filter of a field.
* :func:`encode_write` checks a value against the field's write range and
  converts it to the raw variant of its ``data_type``.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from dataclasses import dataclass
from datetime import datetime

from asyncua import ua
from asyncua.ua.status_codes import get_name_and_doc
from asyncua.ua.uaerrors import UaStringParsingError

from cityedge.drivers.base import DecodeError
from cityedge.profiles import FieldMap, scale_value
from cityedge.readings import Quality, Value, format_ts

NO_VALUE = "no_value"  # a status that is not Bad, and no value with it

_SEVERITY_MASK = 0xC0000000
_SUBCODE_MASK = 0xFFFF0000

VARIANT_TYPES: dict[str, ua.VariantType] = {
    "Boolean": ua.VariantType.Boolean,
    "Int16": ua.VariantType.Int16,
    "UInt16": ua.VariantType.UInt16,
    "Int32": ua.VariantType.Int32,
    "UInt32": ua.VariantType.UInt32,
    "Int64": ua.VariantType.Int64,
    "UInt64": ua.VariantType.UInt64,
    "Float": ua.VariantType.Float,
    "Double": ua.VariantType.Double,
    "String": ua.VariantType.String,
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
_DEADBANDS = {
    "none": ua.DeadbandType.None_,
    "absolute": ua.DeadbandType.Absolute,
    "percent": ua.DeadbandType.Percent,
}


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """How far a value with this status code can be trusted, and why."""

    quality: Quality
    reason: str | None  # the status name when not Good
    code: int | None  # the 32-bit status code when not Good


def status_name(code: int) -> str:
    """The symbolic name of a status code (``BadNodeIdUnknown``), info bits ignored."""
    name, _ = get_name_and_doc(code & _SUBCODE_MASK)
    return name


def quality_of(code: int) -> StatusInfo:
    """Good -> good; Uncertain* -> uncertain; Bad* -> bad, with name and code."""
    code &= 0xFFFFFFFF
    severity = code & _SEVERITY_MASK
    if severity == 0:
        return StatusInfo(Quality.GOOD, None, None)
    quality = Quality.UNCERTAIN if severity == 0x40000000 else Quality.BAD
    return StatusInfo(quality, status_name(code), code)


def shortest_float32(x: float) -> float:
    """The shortest decimal that is still the same float32 (230.36414, not 230.3641357...)."""
    try:
        want = struct.pack(">f", x)
    except OverflowError:
        return x
    for digits in range(6, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack(">f", y) == want:
            return y
    return x


def engineering_value(
    field: FieldMap, raw: object, variant_type: ua.VariantType | None = None
) -> Value:
    """The value a reading carries for ``raw``; raises DecodeError if it has none.

    Numbers are scaled; booleans and strings pass through; a LocalizedText
    gives its text, a DateTime its ISO form, an enumeration its number.
    No value (None, a LocalizedText without text) is ``no_value``; arrays,
    structures and byte strings are refused (``unsupported_type``).
    """
    if raw is None:
        raise DecodeError(NO_VALUE, f"{field.name}: the server sent a status but no value")
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, enum.Enum):
        raw = raw.value
    if isinstance(raw, int):
        return scale_value(raw, field.scale, field.offset)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise DecodeError("invalid_value", f"{field.name}: {raw}")
        if variant_type == ua.VariantType.Float:
            raw = shortest_float32(raw)
        return scale_value(raw, field.scale, field.offset)
    if isinstance(raw, ua.LocalizedText):
        if raw.Text is None:
            raise DecodeError(NO_VALUE, f"{field.name}: the server sent a text without text")
        return raw.Text
    if isinstance(raw, datetime):
        return format_ts(raw)
    raise DecodeError("unsupported_type", f"{field.name}: {type(raw).__name__}")


def sampling_interval_ms(field: FieldMap, default: float) -> float:
    """The field's sampling interval; ``default`` (the publishing interval) if unset."""
    value = field.options.get("sampling_interval_ms")
    return float(value) if isinstance(value, int | float) else default


def monitoring_filter(field: FieldMap) -> ua.DataChangeFilter | None:
    """The field's deadband as a DataChangeFilter; None without a deadband."""
    kind = str(field.options.get("deadband_type", "none"))
    band = field.options.get("deadband", 0)
    if kind == "none" and isinstance(band, int | float) and band > 0:
        kind = "absolute"  # a deadband without a type is absolute
    if kind == "none":
        return None
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = _DEADBANDS[kind]
    flt.DeadbandValue = float(band) if isinstance(band, int | float) else 0.0
    return flt


class WriteError(ValueError):
    """A write was refused before it reached the server (range, type, read-only)."""


def encode_write(field: FieldMap, value: Value) -> ua.Variant:
    """The raw variant to write for engineering ``value``; raises WriteError."""
    if field.write is None:
        raise WriteError(
            f"point {field.name!r} is read-only (its profile field has no write range)"
        )
    data_type = str(field.options.get("data_type", "Double"))
    if data_type == "String":
        if not isinstance(value, str):
            raise WriteError(f"point {field.name!r} takes a string, got {value!r}")
        return ua.Variant(value, ua.VariantType.String)
    if data_type == "Boolean":
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise WriteError(f"point {field.name!r} takes true or false, got {value!r}")
        number = float(value)
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WriteError(f"point {field.name!r} takes a number, got {value!r}")
    else:
        number = float(value)
    low, high = field.write.min, field.write.max
    if not low <= number <= high:
        raise WriteError(
            f"point {field.name!r}: {value!r} is outside its write range [{low:g}, {high:g}]"
        )
    if data_type == "Boolean":
        return ua.Variant(bool(value), ua.VariantType.Boolean)
    raw = (number - field.offset) / field.scale if field.scale else number
    if data_type in _INT_RANGES:
        lo, hi = _INT_RANGES[data_type]
        whole = round(raw)
        if not lo <= whole <= hi:
            raise WriteError(f"point {field.name!r}: raw {whole} does not fit {data_type}")
        return ua.Variant(whole, VARIANT_TYPES[data_type])
    return ua.Variant(raw, VARIANT_TYPES[data_type])


_NODE_ID = re.compile(r"(ns=\d+;)?[isgb]=.+")


def parse_key(key: str) -> ua.NodeId | ua.RelativePath:
    """A field key as a node id (``ns=2;s=Pump1.Speed``) or a browse path from Root.

    Browse paths are ``/``-separated qualified names (``0:Objects/2:Pump1/2:Speed``),
    following hierarchical references. Raises DecodeError if the key is neither.
    """
    if key.startswith("nsu="):
        raise DecodeError("bad_key", f"{key!r}: namespace URIs are not supported, use ns=<index>")
    try:
        if _NODE_ID.fullmatch(key):
            return ua.NodeId.from_string(key)
        return ua.RelativePath.from_string(key if key.startswith(("/", ".", "<")) else "/" + key)
    except (UaStringParsingError, ValueError) as exc:
        raise DecodeError("bad_key", f"{key!r} is neither a node id nor a browse path") from exc
