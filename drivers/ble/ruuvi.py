"""Ruuvi RAWv2 (data format 5) manufacturer data, company id 0x0499. Pure.

24 bytes, big-endian (ruuvi/docs data-format-5-rawv2)::

    0      format = 5
    1-2    temperature   s16  x0.005 Cel     0x8000 = not available
    3-4    humidity      u16  x0.0025 %      0xFFFF
    5-6    pressure      u16  +50000 Pa      0xFFFF
    7-12   accel x,y,z   s16  mG             0x8000
    13-14  power: bits 15..5 battery mV - 1600 (2047), bits 4..0 (tx dBm + 40) / 2 (31)
    15     movement counter u8               0xFF
    16-17  measurement sequence u16          0xFFFF
    18-23  MAC                               FF:FF:FF:FF:FF:FF

A "not available" field decodes to None. bleak strips the company id; data
that still starts with it (``99 04``) is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cityedge.drivers.base import DecodeError

COMPANY_ID = 0x0499
DATA_FORMAT = 5
SIZE = 24


@dataclass(frozen=True, slots=True)
class RuuviReading:
    """One RAWv2 advertisement; None where the tag reports "not available"."""

    temperature: float | None
    humidity: float | None
    pressure_pa: int | None
    acceleration_g: tuple[float | None, float | None, float | None]
    battery_v: float | None
    tx_power_dbm: int | None
    movement_counter: int | None
    sequence: int | None
    mac: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_format": DATA_FORMAT,
            "temperature": self.temperature,
            "humidity": self.humidity,
            "pressure_pa": self.pressure_pa,
            "acceleration_g": list(self.acceleration_g),
            "battery_v": self.battery_v,
            "tx_power_dbm": self.tx_power_dbm,
            "movement_counter": self.movement_counter,
            "sequence": self.sequence,
            "mac": self.mac,
            "units": {
                "temperature": "Cel",
                "humidity": "%",
                "pressure_pa": "Pa",
                "acceleration_g": "g",
                "battery_v": "V",
                "tx_power_dbm": "dBm",
            },
        }


def _s16(data: bytes, pos: int) -> int | None:
    value = int.from_bytes(data[pos : pos + 2], "big", signed=True)
    return None if value == -0x8000 else value


def _u16(data: bytes, pos: int) -> int | None:
    value = int.from_bytes(data[pos : pos + 2], "big")
    return None if value == 0xFFFF else value


def _accel(data: bytes, pos: int) -> float | None:
    milli_g = _s16(data, pos)
    return None if milli_g is None else milli_g / 1000


def parse(data: bytes) -> RuuviReading:
    """Decode RAWv2 manufacturer data; DecodeError on another format or length."""
    data = bytes(data)
    if len(data) == SIZE + 2 and data[:2] == COMPANY_ID.to_bytes(2, "little"):
        data = data[2:]
    if not data:
        raise DecodeError("truncated", "empty manufacturer data")
    if data[0] != DATA_FORMAT:
        raise DecodeError("unsupported_format", f"Ruuvi data format {data[0]}, expected 5")
    if len(data) != SIZE:
        raise DecodeError("bad_length", f"{len(data)} bytes, expected {SIZE}")
    temp, hum, pres = _s16(data, 1), _u16(data, 3), _u16(data, 5)
    power = int.from_bytes(data[13:15], "big")
    battery, tx = power >> 5, power & 0x1F
    mac = data[18:24]
    return RuuviReading(
        temperature=None if temp is None else temp * 5 / 1000,
        humidity=None if hum is None else hum * 25 / 10000,
        pressure_pa=None if pres is None else pres + 50000,
        acceleration_g=(_accel(data, 7), _accel(data, 9), _accel(data, 11)),
        battery_v=None if battery == 2047 else (battery + 1600) / 1000,
        tx_power_dbm=None if tx == 31 else tx * 2 - 40,
        movement_counter=None if data[15] == 0xFF else data[15],
        sequence=_u16(data, 16),
        mac=None if mac == b"\xff" * 6 else ":".join(f"{b:02X}" for b in mac),
    )


def decode_ruuvi(data: bytes) -> dict[str, Any]:
    """RAWv2 manufacturer data as a JSON-ready dict."""
    return parse(data).to_dict()
