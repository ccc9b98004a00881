"""The sensor codecs as the serial source sees them: framer, frame decoder, commands.

:class:`SensorCodec` adapts one pure codec (:mod:`.pms5003`, :mod:`.sds011`,
:mod:`.nmea`, or a :mod:`.generic` description) to the driver: the framer
that cuts its byte stream (:mod:`.framing`), the decoding of one frame to
named scalar values (:class:`Decoded`), and the mode and read commands the
sensor understands. :func:`make_codec` picks the adapter a device's profile
names, or raises :class:`~cityedge.errors.ConfigError`. No I/O here; the
one state kept is :class:`NmeaCodec`'s last valid fix (:class:`LatestFix`).

Each built-in codec (:data:`BUILTIN`) states the keys its frames can yield
(``keys``), which the profile loader checks ``[[fields]]`` keys against;
the tests check them against what the public vectors decode to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cityedge.config.model import DeviceConfig
from cityedge.drivers.base import DecodeError
from cityedge.drivers.serial import nmea, pms5003, sds011
from cityedge.drivers.serial.framing import Framer, NmeaFramer, Pms5003Framer, Sds011Framer
from cityedge.drivers.serial.generic import GenericCodec, SpecError, load_codec
from cityedge.errors import ConfigError, Problem
from cityedge.readings import Value, format_ts


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one data frame yields: named values, and protocol metadata for ``meta``."""

    values: dict[str, Value]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LatestFix:
    """The last valid GPS fix: receiver UTC time, position, and when it arrived here.

    ``time`` is the receiver's time of the fix (RMC marks the start of its
    epoch, so the sentence arrives a few hundred ms later at 9600 baud);
    ``received_at`` is the gateway's clock at arrival and ``received_mono``
    the monotonic clock, to age the fix without trusting the wall clock.
    """

    time: datetime
    lat: float
    lon: float
    received_at: datetime
    received_mono: float

    def age_s(self) -> float:
        return time.monotonic() - self.received_mono

    def as_dict(self) -> dict[str, object]:
        return {
            "time": format_ts(self.time),
            "lat": self.lat,
            "lon": self.lon,
            "received_at": format_ts(self.received_at),
            "age_s": round(self.age_s(), 3),
        }


def _flatten(raw: Mapping[str, Any], drop: frozenset[str]) -> dict[str, Value]:
    """A codec's dict as scalar values; a list ``counts`` becomes ``counts.0``, ``counts.1``..."""
    out: dict[str, Value] = {}
    for key, value in raw.items():
        if key in drop:
            continue
        if isinstance(value, list | tuple):
            out.update({f"{key}.{i}": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


class SensorCodec:
    """A codec as the driver sees it: a framer, a frame decoder, and the sensor's commands."""

    name = ""
    empty_reason = "no_value"  # why a value the frame left empty is a bad reading
    keys: frozenset[str] | None = None  # every key a frame can yield; None: the profile says

    def framer(self) -> Framer:
        raise NotImplementedError

    def decode(self, frame: bytes, ts: datetime) -> Decoded | None:
        """A data frame's values; None for a sound frame without data (an ack, a reply)."""
        raise NotImplementedError

    def mode_command(self, passive: bool) -> bytes | None:
        return None

    def read_command(self) -> bytes | None:
        return None


class Pms5003Codec(SensorCodec):
    name = "pms5003"
    _drop = frozenset({"count_sizes_um"})  # constant labels of the counts, not values
    keys = frozenset(
        {"pm1_0_cf1", "pm2_5_cf1", "pm10_cf1", "pm1_0_atm", "pm2_5_atm", "pm10_atm", "reserved"}
        | {f"counts.{i}" for i in range(len(pms5003.COUNT_SIZES_UM))}
    )

    def framer(self) -> Framer:
        return Pms5003Framer()

    def decode(self, frame: bytes, ts: datetime) -> Decoded | None:
        if not pms5003.is_data_frame(frame):
            return None  # acknowledgement of a mode or sleep command
        return Decoded(_flatten(pms5003.decode_frame(frame).to_dict(), self._drop))

    def mode_command(self, passive: bool) -> bytes:
        return pms5003.cmd_passive_mode() if passive else pms5003.cmd_active_mode()

    def read_command(self) -> bytes:
        return pms5003.cmd_read()


class Sds011Codec(SensorCodec):
    name = "sds011"
    keys = frozenset({"pm2_5", "pm10"})

    def framer(self) -> Framer:
        return Sds011Framer()

    def decode(self, frame: bytes, ts: datetime) -> Decoded | None:
        result = sds011.decode_frame(frame)
        if isinstance(result, sds011.Sds011Reply):
            return None
        values = _flatten(result.to_dict(), frozenset({"type", "device_id"}))
        return Decoded(values, {"sensor_id": result.device_id})

    def mode_command(self, passive: bool) -> bytes:
        return sds011.cmd_set_reporting_mode(query=passive)

    def read_command(self) -> bytes:
        return sds011.cmd_query_data()


class NmeaCodec(SensorCodec):
    """GGA and RMC; other sentences (GSV, GSA, VTG, TXT...) are sound but carry nothing we map."""

    name = "nmea"
    empty_reason = "no_fix"
    _drop = frozenset({"type", "talker"})
    keys = frozenset(
        {"lat", "lon"}  # a frame yields the keys of its sentence: GGA's or RMC's
        | {"time", "fix_quality", "satellites", "hdop", "altitude_m", "geoid_separation_m"}
        | {"timestamp", "valid", "speed_knots", "course_deg", "magnetic_variation_deg", "mode"}
    )

    def __init__(self) -> None:
        self.fix: LatestFix | None = None

    def framer(self) -> Framer:
        return NmeaFramer()

    def decode(self, frame: bytes, ts: datetime) -> Decoded | None:
        try:
            parsed = nmea.parse(frame.decode("ascii"))
        except DecodeError as exc:
            if exc.reason == "unsupported":
                return None
            raise
        if isinstance(parsed, nmea.Rmc) and parsed.valid:
            stamp, lat, lon = parsed.timestamp, parsed.lat, parsed.lon
            if stamp is not None and lat is not None and lon is not None:
                self.fix = LatestFix(stamp, lat, lon, ts, time.monotonic())
        meta = {"sentence": type(parsed).__name__.upper(), "talker": parsed.talker}
        return Decoded(_flatten(parsed.to_dict(), self._drop), meta)


class GenericSensorCodec(SensorCodec):
    """A line or frame sensor described in the profile's ``[codec]`` table."""

    name = "generic"

    def __init__(self, codec: GenericCodec) -> None:
        self.codec = codec

    def framer(self) -> Framer:
        return self.codec.framer()

    def decode(self, frame: bytes, ts: datetime) -> Decoded | None:
        return Decoded(self.codec.decode(frame))


BUILTIN: dict[str, type[SensorCodec]] = {c.name: c for c in (Pms5003Codec, Sds011Codec, NmeaCodec)}
"""The codecs that need no ``[codec]`` table, by the name a profile gives."""


def make_codec(device: DeviceConfig) -> SensorCodec:
    """The device's codec from its profile; ConfigError if it cannot serve the device."""
    profile = device.profile
    codec: SensorCodec
    if profile.codec in BUILTIN:
        codec = BUILTIN[profile.codec]()
    elif profile.codec == "generic":
        try:
            codec = GenericSensorCodec(load_codec(profile.codec_options))
        except SpecError as exc:
            raise _config_error(device, "profile", f"{profile.name}: {exc}") from None
    else:
        raise _config_error(device, "profile", f"{profile.name} is not a serial sensor profile")
    if device.options.get("sensor_mode") == "passive" and codec.read_command() is None:
        message = f"sensor_mode = passive needs a sensor with a read command, not {codec.name}"
        raise _config_error(device, "sensor_mode", message)
    return codec


def _config_error(device: DeviceConfig, key: str, message: str) -> ConfigError:
    return ConfigError([Problem("(config)", device.line, f"devices.{device.id}.{key}", message)])
