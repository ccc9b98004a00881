"""Application payload codecs of LoRaWAN sensors, chosen by a profile's ``codec``.

Pure: ``decode_payload(codec, fport, payload)`` turns a decrypted FRMPayload
into named values (the keys a profile's ``[[fields]]`` map) or raises
:class:`~cityedge.drivers.base.DecodeError`. A value the device reports as
missing or invalid (no probe connected, out of range) is not a number: it is
listed in :attr:`Decoded.bad` with a reason, so the driver can send a bad
reading instead of a wrong one.

Formats, from the vendors' published documents (see
docs/profile-sources-lorawan.md):

* ``cayenne`` - Cayenne LPP; keys ``<channel>.<type>`` (``3.temperature``),
  multi-value types ``<channel>.<type>.<part>`` (``1.gps.lat``).
* ``dragino-ldds75`` - FPort 2, 8 bytes: battery (mV in bits 13..0), distance
  (mm), interrupt flag, DS18B20 temperature (0.1 Cel, signed), sensor flag.
* ``dragino-lht65`` - FPort 2, 11 bytes: battery status (bits 15..14) and mV
  (bits 13..0), SHT temperature (0.01 Cel, signed), humidity (0.1 %), Ext
  byte (bits 3..0 sensor type, bit 6 poll reply, bit 7 probe disconnected),
  4 bytes of the external sensor.
* ``elsys`` - Elsys TLV: a type byte then a fixed-size big-endian value,
  repeated (ERS, ELT and the rest of the range share the format).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import cayenne

Number = int | float

CODECS = ("cayenne", "dragino-ldds75", "dragino-lht65", "elsys")


@dataclass(slots=True)
class Decoded:
    """Values by key, their codec units, and keys the device flagged as invalid."""

    values: dict[str, Number] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # key -> reason

    def put(self, key: str, value: Number, unit: str = "") -> None:
        self.values[key] = value
        if unit:
            self.units[key] = unit

    def invalid(self, key: str, reason: str) -> None:
        self.values.pop(key, None)
        self.bad[key] = reason


def _u(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _s(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def decode_cayenne(fport: int | None, payload: bytes) -> Decoded:
    out = Decoded()
    for rec in cayenne.decode_lpp(payload):
        for name, value, unit in rec.points():
            out.put(f"{rec.channel}.{name}", value, unit)
    return out


def _dragino_port(fport: int | None, payload: bytes, size: int) -> None:
    if fport != 2:
        raise DecodeError("unsupported_fport", f"FPort {fport} carries no sensor data")
    if len(payload) < size:
        raise DecodeError("truncated", f"{len(payload)} bytes, expected {size}")


LDDS75_MIN_MM = 280  # below the published range the reading is invalid


def decode_ldds75(fport: int | None, payload: bytes) -> Decoded:
    """Dragino LDDS75 ultrasonic distance sensor (user manual, decoder v1.1.4)."""
    _dragino_port(fport, payload, 8)
    out = Decoded()
    out.put("battery", (_u(payload[0:2]) & 0x3FFF) / 1000, "V")
    distance = _u(payload[2:4])
    out.put("distance", distance, "mm")
    if distance == 0:
        out.invalid("distance", "no_sensor")
    elif distance < LDDS75_MIN_MM:
        out.invalid("distance", "out_of_range")
    out.put("interrupt", payload[4])
    out.put("ds18b20_temperature", _s(payload[5:7]) / 10, "Cel")
    out.put("sensor_flag", payload[7])
    return out


LHT65_NO_PROBE = 0x7FFF  # the DS18B20 field when no probe answers (327.67 Cel)


def _lht65_ext(out: Decoded, ext: int, raw: bytes) -> None:
    if ext == 1:
        out.put("ext_temperature", _s(raw[0:2]) / 100, "Cel")
        if _u(raw[0:2]) == LHT65_NO_PROBE:
            out.invalid("ext_temperature", "no_sensor")
    elif ext == 4:
        out.put("ext_pin_level", raw[0])
        out.put("ext_interrupt", raw[1])
    elif ext == 5:
        out.put("ext_illuminance", _u(raw[0:2]), "lx")
    elif ext == 6:
        out.put("ext_adc", _u(raw[0:2]) / 1000, "V")
    elif ext == 7:
        out.put("ext_count", _u(raw[0:2]))
    elif ext == 8:
        out.put("ext_count", _u(raw[0:4]))


def decode_lht65(fport: int | None, payload: bytes) -> Decoded:
    """Dragino LHT65 temperature and humidity sensor (user manual v1.x, TTN decoder)."""
    _dragino_port(fport, payload, 11)
    flags = payload[6]
    ext = flags & 0x0F
    if flags & 0x40:
        raise DecodeError("unsupported_message", "datalog poll reply")
    if ext in (0x09, 0x0F):
        raise DecodeError("unsupported_message", f"Ext {ext} (datalog / probe id mode)")
    out = Decoded()
    out.put("battery", (_u(payload[0:2]) & 0x3FFF) / 1000, "V")
    out.put("battery_status", payload[0] >> 6)
    out.put("temperature", _s(payload[2:4]) / 100, "Cel")
    out.put("humidity", (_u(payload[4:6]) & 0x0FFF) / 10, "%")
    out.put("ext_type", ext)
    _lht65_ext(out, ext, payload[7:11])
    if flags & 0x80:
        for key in list(out.values):
            if key.startswith("ext_") and key != "ext_type":
                out.invalid(key, "no_sensor")
    return out


_Elsys = Callable[[Decoded, bytes], None]


def _one(key: str, signed: bool = False, div: int = 1, unit: str = "") -> _Elsys:
    def put(out: Decoded, raw: bytes) -> None:
        number = _s(raw) if signed else _u(raw)
        out.put(key, number / div if div != 1 else number, unit)

    return put


def _parts(
    key: str, names: tuple[str, ...], size: int, signed: bool, div: int, unit: str
) -> _Elsys:
    def put(out: Decoded, raw: bytes) -> None:
        for i, name in enumerate(names):
            chunk = raw[i * size : (i + 1) * size]
            number = _s(chunk) if signed else _u(chunk)
            out.put(f"{key}.{name}", number / div if div != 1 else number, unit)

    return put


def _skip(out: Decoded, raw: bytes) -> None:
    """Consumed, not reported (Grid-EYE frames, debug words)."""


# type byte -> (value size, decoder); Elsys "Payload structure" document.
ELSYS_TYPES: dict[int, tuple[int, _Elsys]] = {
    0x01: (2, _one("temperature", True, 10, "Cel")),
    0x02: (1, _one("humidity", unit="%")),
    0x03: (3, _parts("acceleration", ("x", "y", "z"), 1, True, 1, "")),  # 63 = 1 g
    0x04: (2, _one("light", unit="lx")),
    0x05: (1, _one("motion")),
    0x06: (2, _one("co2", unit="ppm")),
    0x07: (2, _one("vdd", unit="mV")),
    0x08: (2, _one("analog1", unit="mV")),
    0x09: (6, _parts("gps", ("lat", "lon"), 3, True, 1, "")),  # raw; scale in the profile
    0x0A: (2, _one("pulse1")),
    0x0B: (4, _one("pulse1_abs")),
    0x0C: (2, _one("ext_temperature1", True, 10, "Cel")),
    0x0D: (1, _one("digital")),
    0x0E: (2, _one("distance", unit="mm")),
    0x0F: (1, _one("acc_motion")),
    0x10: (4, _parts("ir_temperature", ("internal", "external"), 2, True, 10, "Cel")),
    0x11: (1, _one("occupancy")),
    0x12: (1, _one("waterleak")),
    0x13: (65, _skip),
    0x14: (4, _one("pressure", div=1000, unit="hPa")),
    0x15: (2, _parts("sound", ("peak", "avg"), 1, False, 1, "dB")),
    0x16: (2, _one("pulse2")),
    0x17: (4, _one("pulse2_abs")),
    0x18: (2, _one("analog2", unit="mV")),
    0x19: (2, _one("ext_temperature2", True, 10, "Cel")),
    0x1A: (1, _one("digital2")),
    0x1B: (4, _one("analog_uv", True, unit="uV")),
    0x1C: (2, _one("tvoc", unit="ppb")),
    0x3D: (4, _skip),
}


def decode_elsys(fport: int | None, payload: bytes) -> Decoded:
    """Elsys TLV payload; an unknown type or a value cut short is a decode error."""
    out = Decoded()
    pos = 0
    while pos < len(payload):
        kind = payload[pos]
        spec = ELSYS_TYPES.get(kind)
        if spec is None:
            raise DecodeError("unknown_type", f"Elsys type 0x{kind:02X} at byte {pos}")
        size, put = spec
        if pos + 1 + size > len(payload):
            raise DecodeError("truncated", f"Elsys type 0x{kind:02X} cut short")
        put(out, payload[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return out


DECODERS: dict[str, Callable[[int | None, bytes], Decoded]] = {
    "cayenne": decode_cayenne,
    "dragino-ldds75": decode_ldds75,
    "dragino-lht65": decode_lht65,
    "elsys": decode_elsys,
}


def decode_payload(codec: str, fport: int | None, payload: bytes) -> Decoded:
    """Decode ``payload`` with the named codec. Raises DecodeError, or KeyError for no codec."""
    return DECODERS[codec](fport, payload)
