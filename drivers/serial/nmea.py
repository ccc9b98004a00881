"""NMEA 0183 sentences from a GPS receiver: GGA and RMC. Pure: no I/O, no clock.

A sentence is ``$TTSSS,f1,f2,...*HH`` where TT is the talker (GP GPS, GN
multi-constellation, GL GLONASS, GA Galileo, BD/GB BeiDou...), SSS the
sentence type and HH the XOR of every character strictly between ``$`` and
``*``. Positions come as ``ddmm.mmmm`` plus a hemisphere letter; times as
``hhmmss.ss`` UTC; RMC dates as ``ddmmyy``.

RMC is what a gateway uses as location and time reference
(:func:`gateway_fix`): it alone carries the date, and its status letter says
whether the receiver trusts its fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from cityedge.drivers.base import DecodeError

MAX_SENTENCE = 100
"""The standard allows 82 characters; some receivers exceed it a little."""
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)", re.ASCII)
_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(\.\d+)?", re.ASCII)


def checksum(body: str) -> int:
    """XOR of the characters of ``body`` (the text between ``$`` and ``*``)."""
    value = 0
    for ch in body.encode("ascii", "replace"):
        value ^= ch
    return value


def split(sentence: str) -> tuple[str, str, list[str]]:
    """Check a sentence and split it into (talker, type, fields)."""
    s = sentence.strip()
    if len(s) > MAX_SENTENCE:
        raise DecodeError("bad_length", f"{len(s)} characters")
    if not s.startswith("$") or not s.isascii():
        raise DecodeError("bad_start", s[:8])
    body, star, tail = s[1:].rpartition("*")
    if not star or len(tail) != 2 or not all(c in "0123456789abcdefABCDEF" for c in tail):
        raise DecodeError("bad_tail", "no *HH checksum")
    if checksum(body) != int(tail, 16):
        raise DecodeError("bad_checksum", f"computed {checksum(body):02X}, sentence says {tail}")
    address, *fields = body.split(",")
    if len(address) != 5 or not address.isalnum():
        raise DecodeError("bad_address", address)
    return address[:2], address[2:], fields


def _float(text: str, what: str) -> float | None:
    if not text:
        return None
    # float() alone would take "nan", "inf" and "1_0", none of which a receiver means.
    if not _NUMBER.fullmatch(text):
        raise DecodeError("bad_field", f"{what}: {text!r}")
    return float(text)


def _int(text: str, what: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise DecodeError("bad_field", f"{what}: {text!r}")
    return int(text)


def _coord(value: str, hemi: str, deg_digits: int, limit: int) -> float | None:
    """``ddmm.mmmm`` (or ``dddmm.mmmm``) and N/S/E/W to signed decimal degrees."""
    if not value and not hemi:
        return None
    what = "latitude" if deg_digits == 2 else "longitude"
    if hemi not in (("N", "S") if deg_digits == 2 else ("E", "W")) or len(value) < deg_digits + 2:
        raise DecodeError("bad_field", f"{what}: {value!r} {hemi!r}")
    degrees = _int(value[:deg_digits], what)
    minutes = _float(value[deg_digits:], what)
    if degrees is None or minutes is None or not 0 <= minutes < 60:
        raise DecodeError("bad_field", f"{what}: {value!r}")
    result = degrees + minutes / 60
    if result > limit:
        raise DecodeError("bad_field", f"{what}: {value!r}")
    return -result if hemi in "SW" else result


def _time(text: str) -> time | None:
    if not text:
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        raise DecodeError("bad_field", f"time: {text!r}")
    micros = round(float(m[4] or "0") * 1_000_000)
    try:
        # A leap second (ss = 60) is folded into :59.
        return time(int(m[1]), int(m[2]), min(int(m[3]), 59), min(micros, 999_999), tzinfo=UTC)
    except ValueError:
        raise DecodeError("bad_field", f"time: {text!r}") from None


def _date(text: str) -> date | None:
    if not text:
        return None
    if len(text) != 6 or not text.isdigit():
        raise DecodeError("bad_field", f"date: {text!r}")
    yy = int(text[4:6])
    # Two-digit years: the NMEA convention pivots on 1980, when GPS time began.
    try:
        return date(1900 + yy if yy >= 80 else 2000 + yy, int(text[2:4]), int(text[0:2]))
    except ValueError:
        raise DecodeError("bad_field", f"date: {text!r}") from None


def _need(fields: list[str], n: int, kind: str) -> None:
    if len(fields) < n:
        raise DecodeError("truncated", f"{kind} needs {n} fields, got {len(fields)}")


@dataclass(frozen=True, slots=True)
class Gga:
    """Fix data. ``fix_quality`` 0 means no fix; altitude is above mean sea level."""

    talker: str
    time: time | None
    lat: float | None
    lon: float | None
    fix_quality: int
    satellites: int | None
    hdop: float | None
    altitude_m: float | None
    geoid_separation_m: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "GGA",
            "talker": self.talker,
            "time": self.time.strftime("%H:%M:%S.%f") if self.time else None,
            "lat": _round(self.lat),
            "lon": _round(self.lon),
            "fix_quality": self.fix_quality,
            "satellites": self.satellites,
            "hdop": self.hdop,
            "altitude_m": self.altitude_m,
            "geoid_separation_m": self.geoid_separation_m,
        }


@dataclass(frozen=True, slots=True)
class Rmc:
    """Recommended minimum data. ``valid`` is the status letter A (V = warning)."""

    talker: str
    valid: bool
    timestamp: datetime | None
    lat: float | None
    lon: float | None
    speed_knots: float | None
    course_deg: float | None
    magnetic_variation_deg: float | None
    mode: str | None

    def to_dict(self) -> dict[str, Any]:
        ts = self.timestamp
        return {
            "type": "RMC",
            "talker": self.talker,
            "valid": self.valid,
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else None,
            "lat": _round(self.lat),
            "lon": _round(self.lon),
            "speed_knots": self.speed_knots,
            "course_deg": self.course_deg,
            "magnetic_variation_deg": self.magnetic_variation_deg,
            "mode": self.mode,
        }


class GatewayFix(NamedTuple):
    """What the gateway takes from RMC: UTC time, position, and whether to trust them."""

    timestamp: datetime | None
    lat: float | None
    lon: float | None
    valid: bool


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 7)


def _gga(talker: str, f: list[str]) -> Gga:
    _need(f, 9, "GGA")
    quality = _int(f[5], "fix quality")
    return Gga(
        talker=talker,
        time=_time(f[0]),
        lat=_coord(f[1], f[2], 2, 90),
        lon=_coord(f[3], f[4], 3, 180),
        fix_quality=quality or 0,
        satellites=_int(f[6], "satellites"),
        hdop=_float(f[7], "hdop"),
        altitude_m=_float(f[8], "altitude"),
        geoid_separation_m=_float(f[10], "geoid separation") if len(f) > 10 else None,
    )


def _rmc(talker: str, f: list[str]) -> Rmc:
    _need(f, 9, "RMC")
    if f[1] not in ("A", "V"):
        raise DecodeError("bad_field", f"status: {f[1]!r}")
    t, d = _time(f[0]), _date(f[8])
    ts = datetime.combine(d, t) if t is not None and d is not None else None
    variation = _float(f[9], "magnetic variation") if len(f) > 10 else None
    if variation is not None and f[10] == "W":
        variation = -variation
    mode = f[11] if len(f) > 11 and f[11] else None
    return Rmc(
        talker=talker,
        # Mode N (not valid) overrides an A status on NMEA 2.3+ receivers.
        valid=f[1] == "A" and mode != "N" and ts is not None,
        timestamp=ts,
        lat=_coord(f[2], f[3], 2, 90),
        lon=_coord(f[4], f[5], 3, 180),
        speed_knots=_float(f[6], "speed"),
        course_deg=_float(f[7], "course"),
        magnetic_variation_deg=variation,
        mode=mode,
    )


def parse(sentence: str) -> Gga | Rmc:
    """Parse a GGA or RMC sentence from any talker; DecodeError otherwise."""
    talker, kind, fields = split(sentence)
    if kind == "GGA":
        return _gga(talker, fields)
    if kind == "RMC":
        return _rmc(talker, fields)
    raise DecodeError("unsupported", f"sentence type {kind}")


def parse_gga(sentence: str) -> Gga:
    result = parse(sentence)
    if not isinstance(result, Gga):
        raise DecodeError("unsupported", "not a GGA sentence")
    return result


def parse_rmc(sentence: str) -> Rmc:
    result = parse(sentence)
    if not isinstance(result, Rmc):
        raise DecodeError("unsupported", "not an RMC sentence")
    return result


def gateway_fix(sentence: str) -> GatewayFix:
    """(UTC datetime, lat, lon, valid) from an RMC sentence, for location and clock checks."""
    rmc = parse_rmc(sentence)
    ok = rmc.valid and rmc.lat is not None and rmc.lon is not None
    return GatewayFix(rmc.timestamp, rmc.lat, rmc.lon, ok)


def decode_nmea(sentence: str) -> dict[str, Any]:
    """A GGA or RMC sentence as a JSON-ready dict."""
    return parse(sentence).to_dict()


def line_problem(line: bytes) -> str | None:
    """Why a framed line (``$...*HH`` without CR LF) must be rejected, or None."""
    if not line.isascii():
        return "garbage"
    try:
        split(line.decode("ascii"))
    except DecodeError as exc:
        # A sound frame with a bad field is the decoder's to reject, not the framer's.
        return exc.reason if exc.reason in ("bad_checksum", "bad_length", "bad_tail") else None
    return None
