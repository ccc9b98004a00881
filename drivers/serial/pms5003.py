"""Plantower PMS5003 particulate sensor frames. Pure: no I/O, no clock.

The sensor speaks 9600 8N1. In *active* mode it sends a 32-byte data frame
about once a second; in *passive* mode it sends one only when asked with the
``read`` command, which lets a driver pace the sensor and put it to sleep
between reads (its fan and laser wear out).

Data frame (all words big-endian)::

    42 4D | length = 28 | 13 words | checksum = sum of bytes 0..29

The 13 words are PM1.0, PM2.5, PM10 with the factory "CF=1" calibration,
the same three under atmospheric conditions (the ones to publish), six
particle counts per 0.1 L of air above 0.3, 0.5, 1.0, 2.5, 5 and 10 µm, and
a reserved word (PMS7003: firmware version and error code).

Commands are 7 bytes: ``42 4D CMD DATA_H DATA_L SUM_H SUM_L`` with the sum
over the first five bytes. ``change mode`` and ``sleep`` are acknowledged by
an 8-byte frame ``42 4D 00 04 CMD DATA SUM_H SUM_L``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cityedge.drivers.base import DecodeError

START = b"\x42\x4d"
DATA_LENGTH = 28
ACK_LENGTH = 4
FRAME_SIZE = 4 + DATA_LENGTH
ACK_SIZE = 4 + ACK_LENGTH
LENGTHS = (DATA_LENGTH, ACK_LENGTH)
"""Values of the length field the framer accepts; anything else is ``bad_length``."""

CMD_READ = 0xE2
CMD_MODE = 0xE1
CMD_SLEEP = 0xE4
COUNT_SIZES_UM = (0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Pms5003Reading:
    """One data frame. Mass concentrations in µg/m³, counts per 0.1 L."""

    pm1_0_cf1: int
    pm2_5_cf1: int
    pm10_cf1: int
    pm1_0_atm: int
    pm2_5_atm: int
    pm10_atm: int
    counts: tuple[int, int, int, int, int, int]
    reserved: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pm1_0_cf1": self.pm1_0_cf1,
            "pm2_5_cf1": self.pm2_5_cf1,
            "pm10_cf1": self.pm10_cf1,
            "pm1_0_atm": self.pm1_0_atm,
            "pm2_5_atm": self.pm2_5_atm,
            "pm10_atm": self.pm10_atm,
            "counts": list(self.counts),
            "count_sizes_um": list(COUNT_SIZES_UM),
            "reserved": self.reserved,
        }


def checksum(frame: bytes) -> int:
    """The 16-bit sum of every byte before the checksum field."""
    return sum(frame[:-2]) & 0xFFFF


def frame_size(header: bytes) -> int | None:
    """Total frame size from its first four bytes, or None if the length is not one we know."""
    length = int.from_bytes(header[2:4], "big")
    return 4 + length if length in LENGTHS else None


def frame_problem(frame: bytes) -> str | None:
    """Why a complete frame must be rejected (a reason slug), or None if it is sound."""
    if frame[:2] != START or frame_size(frame[:4]) != len(frame):
        return "bad_length"
    if checksum(frame) != int.from_bytes(frame[-2:], "big"):
        return "bad_checksum"
    return None


def _check(frame: bytes, size: int) -> None:
    if len(frame) < size:
        raise DecodeError("truncated", f"{len(frame)} of {size} bytes")
    if len(frame) > size or frame[:2] != START or frame_size(frame[:4]) != size:
        raise DecodeError("bad_length", frame[:4].hex())
    if frame_problem(frame) is not None:
        raise DecodeError(
            "bad_checksum", f"sum {checksum(frame):04x}, frame says {frame[-2:].hex()}"
        )


def decode_frame(frame: bytes) -> Pms5003Reading:
    """Decode one complete 32-byte data frame; DecodeError if it is not one."""
    _check(frame, FRAME_SIZE)
    w = [int.from_bytes(frame[i : i + 2], "big") for i in range(4, 30, 2)]
    return Pms5003Reading(
        pm1_0_cf1=w[0],
        pm2_5_cf1=w[1],
        pm10_cf1=w[2],
        pm1_0_atm=w[3],
        pm2_5_atm=w[4],
        pm10_atm=w[5],
        counts=(w[6], w[7], w[8], w[9], w[10], w[11]),
        reserved=w[12],
    )


def decode_ack(frame: bytes) -> tuple[int, int]:
    """Decode an 8-byte command acknowledgement into (command, data)."""
    _check(frame, ACK_SIZE)
    return frame[4], frame[5]


def is_data_frame(frame: bytes) -> bool:
    return len(frame) == FRAME_SIZE


def command(cmd: int, data: int = 0) -> bytes:
    """A 7-byte command frame with its checksum."""
    if not 0 <= cmd <= 0xFF or not 0 <= data <= 0xFFFF:
        raise ValueError(f"command {cmd!r} / data {data!r} out of range")
    body = START + bytes([cmd]) + data.to_bytes(2, "big")
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def cmd_passive_mode() -> bytes:
    """Stop sending by itself; answer :func:`cmd_read` only."""
    return command(CMD_MODE, 0)


def cmd_active_mode() -> bytes:
    """Send a data frame whenever the reading changes (the power-on default)."""
    return command(CMD_MODE, 1)


def cmd_read() -> bytes:
    """Ask for one data frame (passive mode)."""
    return command(CMD_READ, 0)


def cmd_sleep() -> bytes:
    """Stop the fan and laser. The sensor needs ~30 s after wake before readings settle."""
    return command(CMD_SLEEP, 0)


def cmd_wake() -> bytes:
    return command(CMD_SLEEP, 1)


def decode_pms5003(data: bytes) -> dict[str, Any]:
    """The first good data frame in ``data`` (a stream: leading garbage is skipped).

    Raises DecodeError with the reason of the first rejected frame, or
    ``truncated`` / ``no_frame`` when no complete data frame is present.
    """
    # Imported here: the framer module builds on this one.
    from cityedge.drivers.serial.framing import Frame, Pms5003Framer

    first_reason: str | None = None
    for item in Pms5003Framer().feed(bytes(data)):
        if isinstance(item, Frame):
            if is_data_frame(item.data):
                return decode_frame(item.data).to_dict()
            first_reason = first_reason or "not_data"
        elif item.reason != "garbage" and first_reason is None:
            first_reason = item.reason
    if first_reason is not None:
        raise DecodeError(first_reason, "no good data frame")
    start = bytes(data).find(START)
    raise DecodeError("truncated" if start >= 0 else "no_frame", f"{len(data)} bytes")
