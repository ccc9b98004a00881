"""A serial codec a technician describes in a profile instead of code. Pure.

Two shapes cover most simple sensors. An ASCII *line* sensor (one reading
per line) is read with a regular expression with named groups or with a
delimiter and field indexes::

    [codec]
    kind = "line"
    regex = 'T=(?P<temperature>-?[0-9.]+) RH=(?P<humidity>[0-9.]+)'
    fields = [{name = "temperature", unit = "Cel"}, {name = "humidity", unit = "%RH"}]

    [codec]
    kind = "line"
    delimiter = ","
    fields = [{name = "level", index = 2, type = "int", scale = 0.1, unit = "cm"}]

Lines end with LF (CR LF too); ``eol = "cr"`` is for sensors that end each
line with a bare carriage return (a MaxBotix range finder's ``R1234\\r``).

A *frame* sensor sends fixed-size binary frames::

    [codec]
    kind = "frame"
    start = "AA55"           # hex
    length = 9               # whole frame, start to tail
    checksum = "sum8"        # sum8 | xor8 | crc16-modbus | none
    checksum_from = 2        # first byte covered (default 0); coverage ends at the checksum
    tail = "0D"              # optional hex
    fields = [{name = "distance", offset = 2, type = "u16", scale = 0.1, unit = "cm"}]

The checksum sits just before the tail (``checksum_at`` overrides); a
crc16-modbus is stored low byte first unless ``checksum_endian = "big"``.
A value is ``raw * scale + add``. :func:`load_codec` checks the whole spec
and raises :class:`SpecError` listing every problem at once.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cityedge.drivers.base import DecodeError
from cityedge.drivers.serial.framing import BinaryFramer, LineFramer
from cityedge.readings import Value

BINARY_TYPES = {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i"}
BINARY_TYPES |= {"f32": "f", "f64": "d"}
LINE_TYPES = ("float", "int", "str")
CHECKSUMS: dict[str, int] = {"none": 0, "sum8": 1, "xor8": 1, "crc16-modbus": 2}
MAX_FRAME = 1024
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)
_COMMON = {"kind", "fields"}
_LINE_KEYS = _COMMON | {"regex", "delimiter", "max_line", "eol"}
EOLS = {"lf": b"\n", "cr": b"\r"}
_FRAME_KEYS = _COMMON | {"start", "length", "checksum", "checksum_from", "checksum_at"}
_FRAME_KEYS |= {"checksum_endian", "tail"}
_FIELD_KEYS = {"name", "unit", "scale", "add", "type"}
_MODE_KEYS = {"regex": {"group"}, "delimiter": {"index"}, "frame": {"offset", "endian"}}


class SpecError(ValueError):
    """A codec spec is wrong. ``problems`` lists each as ``path: message (got value)``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("bad codec spec: " + "; ".join(problems))


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: reflected polynomial 0xA001, initial value 0xFFFF."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_CHECKSUM_FUNCS: dict[str, Callable[[bytes], int]] = {
    "sum8": sum8,
    "xor8": xor8,
    "crc16-modbus": crc16_modbus,
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One value: where it is (``group``/``index`` or ``offset``), its type and scaling."""

    name: str
    type: str
    unit: str = ""
    scale: float = 1.0
    add: float = 0.0
    group: str = ""
    index: int = 0
    offset: int = 0
    endian: str = "big"

    def finish(self, raw: int | float | str) -> Value:
        if isinstance(raw, str):
            return raw
        value = raw if self.scale == 1 and self.add == 0 else raw * self.scale + self.add
        if isinstance(value, float) and not math.isfinite(value):
            raise DecodeError("bad_field", f"{self.name}: {raw!r} is out of range")
        return value


class _Checker:
    """Collects problems as it reads a spec mapping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, message: str, got: object) -> None:
        self.problems.append(f"{path}: {message} (got {got!r})")

    def keys(self, spec: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(spec) - allowed):
            self.bad(
                f"{path}{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}", key
            )

    def int_(self, spec: Mapping[str, Any], key: str, path: str, default: int, lo: int) -> int:
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            self.bad(path + key, f"must be an integer >= {lo}", value)
            return default
        return value

    def num(self, spec: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = spec.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.bad(path + key, "must be a finite number", value)
            return default
        return value

    def choice(
        self, spec: Mapping[str, Any], key: str, path: str, options: Any, default: str
    ) -> str:
        value = spec.get(key, default)
        if value not in options:
            self.bad(path + key, f"must be one of {', '.join(options)}", value)
            return default
        return str(value)

    def hex_(self, spec: Mapping[str, Any], key: str) -> bytes:
        value = spec.get(key, "")
        try:
            if isinstance(value, str):
                return bytes.fromhex(value)
        except ValueError:
            pass
        self.bad(key, "must be a string of hex digits", value)
        return b""


def _fields(chk: _Checker, spec: Mapping[str, Any], mode: str) -> list[FieldSpec]:
    """Read ``fields`` for a mode: ``regex``, ``delimiter`` or ``frame``."""
    raw = spec.get("fields")
    if not isinstance(raw, list) or not raw:
        chk.bad("fields", "must be a non-empty list of tables", raw)
        return []
    out: list[FieldSpec] = []
    for n, item in enumerate(raw):
        path = f"fields[{n}]."
        if not isinstance(item, Mapping):
            chk.bad(path[:-1], "must be a table", item)
            continue
        chk.keys(item, _FIELD_KEYS | _MODE_KEYS[mode], path)
        where = {"delimiter": "index", "frame": "offset"}.get(mode)
        if where is not None and where not in item:
            chk.bad(path + where, "is required", None)
        name = item.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            chk.bad(path + "name", "must be a name of letters, digits and _", name)
            name = f"field{n}"
        elif name in {f.name for f in out}:
            chk.bad(path + "name", "is used twice", name)
        unit = item.get("unit", "")
        if not isinstance(unit, str):
            chk.bad(path + "unit", "must be a string", unit)
            unit = ""
        types = list(BINARY_TYPES) if mode == "frame" else list(LINE_TYPES)
        type_ = chk.choice(item, "type", path, types, "u16" if mode == "frame" else "float")
        scale, add = chk.num(item, "scale", path, 1.0), chk.num(item, "add", path, 0.0)
        if type_ == "str" and (scale != 1 or add != 0):
            chk.bad(path + "type", "a str field cannot have scale or add", type_)
        group = item.get("group", name)
        if not isinstance(group, str):
            chk.bad(path + "group", "must be a group name of the regex", group)
            group = name
        out.append(
            FieldSpec(
                name=name,
                type=type_,
                unit=unit,
                scale=scale,
                add=add,
                group=group,
                index=chk.int_(item, "index", path, 0, 0),
                offset=chk.int_(item, "offset", path, 0, 0),
                endian=chk.choice(item, "endian", path, ("big", "little"), "big"),
            )
        )
    return out


def _number(text: str, field: FieldSpec) -> int | float:
    text = text.strip()
    if field.type == "int":
        # 18 digits keep it within int64, and within float when scaled.
        if not re.fullmatch(r"[-+]?\d{1,18}", text, re.ASCII):
            raise DecodeError("bad_field", f"{field.name}: {text!r} is not an integer")
        return int(text)
    if not _NUMBER.fullmatch(text):
        raise DecodeError("bad_field", f"{field.name}: {text!r} is not a number")
    return float(text)


class LineCodec:
    """ASCII lines: a regex with named groups, or a delimiter and field indexes."""

    kind = "line"

    def __init__(
        self,
        fields: list[FieldSpec],
        regex: re.Pattern[str] | None,
        delimiter: str,
        max_line: int,
        eol: bytes = b"\n",
    ) -> None:
        self.fields = fields
        self.regex = regex
        self.delimiter = delimiter
        self.max_line = max_line
        self.eol = eol

    @property
    def units(self) -> dict[str, str]:
        return {f.name: f.unit for f in self.fields}

    def framer(self) -> LineFramer:
        return LineFramer(self.max_line, eol=self.eol)

    def decode(self, line: bytes) -> dict[str, Value]:
        try:
            text = bytes(line).decode("ascii").strip()
        except UnicodeDecodeError:
            raise DecodeError("garbage", "line is not ASCII") from None
        parts = self._parts(text)
        out: dict[str, Value] = {}
        for field, part in zip(self.fields, parts, strict=True):
            if part is None:
                out[field.name] = None
            elif field.type == "str":
                out[field.name] = part
            else:
                out[field.name] = field.finish(_number(part, field))
        return out

    def _parts(self, text: str) -> list[str | None]:
        if self.regex is not None:
            m = self.regex.search(text)
            if m is None:
                raise DecodeError("no_match", text[:40])
            return [m.group(f.group) for f in self.fields]
        cols = text.split(self.delimiter)
        if max(f.index for f in self.fields) >= len(cols):
            raise DecodeError("missing_field", f"{len(cols)} columns in {text[:40]!r}")
        return [cols[f.index] for f in self.fields]


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """Where a fixed frame's start, checksum and tail are."""

    start: bytes
    length: int
    checksum: str = "none"
    checksum_from: int = 0
    checksum_at: int = 0
    checksum_endian: str = "little"
    tail: bytes = b""


class FrameCodec:
    """Fixed-size binary frames: start bytes, fields, checksum, optional tail."""

    kind = "frame"

    def __init__(self, fields: list[FieldSpec], layout: FrameLayout) -> None:
        self.fields = fields
        self.start, self.length, self.tail = layout.start, layout.length, layout.tail
        self.checksum, self.checksum_endian = layout.checksum, layout.checksum_endian
        self.checksum_from, self.checksum_at = layout.checksum_from, layout.checksum_at

    @property
    def units(self) -> dict[str, str]:
        return {f.name: f.unit for f in self.fields}

    def framer(self) -> BinaryFramer:
        length = self.length
        return BinaryFramer(self.start, len(self.start), length, lambda _h: length, self.problem)

    def problem(self, frame: bytes) -> str | None:
        """Why a complete frame must be rejected, or None."""
        if len(frame) != self.length or not frame.startswith(self.start):
            return "bad_length"
        if self.tail and not frame.endswith(self.tail):
            return "bad_tail"
        size = CHECKSUMS[self.checksum]
        if size:
            at = self.checksum_at
            want = _CHECKSUM_FUNCS[self.checksum](frame[self.checksum_from : at])
            got = frame[at : at + size]
            if self.checksum_endian == "little":
                got = got[::-1]
            if int.from_bytes(got, "big") != want:
                return "bad_checksum"
        return None

    def decode(self, frame: bytes) -> dict[str, Value]:
        frame = bytes(frame)
        if len(frame) < self.length:
            raise DecodeError("truncated", f"{len(frame)} of {self.length} bytes")
        problem = self.problem(frame)
        if problem is not None:
            raise DecodeError(problem, frame[:32].hex())
        out: dict[str, Value] = {}
        for f in self.fields:
            fmt = (">" if f.endian == "big" else "<") + BINARY_TYPES[f.type]
            (raw,) = struct.unpack_from(fmt, frame, f.offset)
            if isinstance(raw, float) and not math.isfinite(raw):
                raise DecodeError("bad_field", f"{f.name}: not a finite number")
            out[f.name] = f.finish(raw)
        return out


GenericCodec = LineCodec | FrameCodec


def load_codec(spec: Mapping[str, Any]) -> GenericCodec:
    """Check a codec spec (a TOML table) and build its codec; SpecError lists every problem."""
    chk = _Checker()
    if not isinstance(spec, Mapping):
        raise SpecError([f"codec: must be a table (got {spec!r})"])
    kind = spec.get("kind")
    if kind == "line":
        codec: GenericCodec = _line(chk, spec)
    elif kind == "frame":
        codec = _frame(chk, spec)
    else:
        raise SpecError([f"kind: must be one of line, frame (got {kind!r})"])
    if chk.problems:
        raise SpecError(chk.problems)
    return codec


def _line(chk: _Checker, spec: Mapping[str, Any]) -> LineCodec:
    chk.keys(spec, _LINE_KEYS, "")
    fields = _fields(chk, spec, "delimiter" if "delimiter" in spec else "regex")
    max_line = chk.int_(spec, "max_line", "", 256, 8)
    if max_line > MAX_FRAME:
        chk.bad("max_line", f"must be at most {MAX_FRAME}", max_line)
    eol = EOLS[chk.choice(spec, "eol", "", list(EOLS), "lf")]
    regex, delimiter = spec.get("regex"), spec.get("delimiter")
    if (regex is None) == (delimiter is None):
        chk.bad("regex", "give exactly one of regex and delimiter", (regex, delimiter))
        return LineCodec(fields, None, ",", max_line, eol)
    if delimiter is not None:
        if not isinstance(delimiter, str) or not delimiter:
            chk.bad("delimiter", "must be a non-empty string", delimiter)
        return LineCodec(fields, None, str(delimiter) or ",", max_line, eol)
    try:
        pattern = re.compile(regex) if isinstance(regex, str) else None
    except re.error as exc:
        chk.bad("regex", f"does not compile: {exc}", regex)
        return LineCodec(fields, None, ",", max_line, eol)
    if pattern is None:
        chk.bad("regex", "must be a string", regex)
        return LineCodec(fields, None, ",", max_line, eol)
    for n, f in enumerate(fields):
        if f.group not in pattern.groupindex:
            chk.bad(f"fields[{n}].group", "is not a named group of the regex", f.group)
    return LineCodec(fields, pattern, ",", max_line, eol)


def _frame(chk: _Checker, spec: Mapping[str, Any]) -> FrameCodec:
    chk.keys(spec, _FRAME_KEYS, "")
    fields = _fields(chk, spec, "frame")
    start, tail = chk.hex_(spec, "start"), chk.hex_(spec, "tail")
    if not start:
        chk.bad("start", "a frame needs at least one start byte", spec.get("start"))
    length = chk.int_(spec, "length", "", 0, 1)
    if not len(start) < length <= MAX_FRAME:
        chk.bad("length", f"must be more than the start bytes and at most {MAX_FRAME}", length)
    checksum = chk.choice(spec, "checksum", "", list(CHECKSUMS), "none")
    size = CHECKSUMS[checksum]
    at = chk.int_(spec, "checksum_at", "", length - len(tail) - size, 0)
    frm = chk.int_(spec, "checksum_from", "", 0, 0)
    endian = chk.choice(spec, "checksum_endian", "", ("big", "little"), "little")
    if size and not frm < at <= length - size:
        chk.bad("checksum_at", f"checksum must lie after checksum_from={frm} in the frame", at)
    for n, f in enumerate(fields):
        width = struct.calcsize(BINARY_TYPES[f.type])
        if f.offset + width > length:
            chk.bad(
                f"fields[{n}].offset", f"{f.type} does not fit in a {length}-byte frame", f.offset
            )
    return FrameCodec(fields, FrameLayout(start, length, checksum, frm, at, endian, tail))
