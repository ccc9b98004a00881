"""Nova Fitness SDS011 particulate sensor frames. Pure: no I/O, no clock.

The sensor speaks 9600 8N1. Every frame it sends is 10 bytes::

    AA | C0 or C5 | six data bytes | checksum | AB

with the checksum the low byte of the sum of the six data bytes (2..7).
``C0`` frames carry PM2.5 and PM10 as little-endian tenths of µg/m³ and the
device id; ``C5`` frames answer a command. Commands to the sensor are 19
bytes: ``AA B4``, command id and twelve data bytes, the target device id
(``FFFF`` for any), the checksum of bytes 2..16, ``AB``.

The device id is shown as the little-endian 16-bit value in hex: id bytes
``A1 60`` are device ``60A1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cityedge.drivers.base import DecodeError

HEAD = 0xAA
TAIL = 0xAB
DATA_CMD = 0xC0
REPLY_CMD = 0xC5
REQUEST_CMD = 0xB4
FRAME_SIZE = 10
COMMAND_SIZE = 19
ANY_DEVICE = "FFFF"

REPORTING_MODE = 0x02
QUERY_DATA = 0x04
SET_DEVICE_ID = 0x05
SLEEP_WORK = 0x06
FIRMWARE = 0x07
WORKING_PERIOD = 0x08
_REPLY_NAMES = {
    REPORTING_MODE: "reporting_mode",
    SET_DEVICE_ID: "device_id",
    SLEEP_WORK: "sleep_work",
    FIRMWARE: "firmware",
    WORKING_PERIOD: "working_period",
}


@dataclass(frozen=True, slots=True)
class Sds011Reading:
    """One ``C0`` data frame; concentrations in µg/m³."""

    pm2_5: float
    pm10: float
    device_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "data", "pm2_5": self.pm2_5, "pm10": self.pm10, "device_id": self.device_id}


@dataclass(frozen=True, slots=True)
class Sds011Reply:
    """One ``C5`` reply to a command.

    ``command`` names it (``reporting_mode``, ``sleep_work``, ``working_period``,
    ``firmware``, ``device_id``); ``is_set`` is true when it answers a set rather
    than a query. ``value`` is: reporting mode ``active``/``query``; sleep/work
    ``sleep``/``work``; the working period in minutes (0 = continuous); the
    firmware date ``YY-MM-DD``; the new device id.
    """

    command: str
    is_set: bool
    value: int | str
    device_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "reply",
            "command": self.command,
            "set": self.is_set,
            "value": self.value,
            "device_id": self.device_id,
        }


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame_problem(frame: bytes) -> str | None:
    """Why a complete 10-byte frame must be rejected, or None if it is sound."""
    if len(frame) != FRAME_SIZE or frame[0] != HEAD or frame[1] not in (DATA_CMD, REPLY_CMD):
        return "bad_length"
    if frame[9] != TAIL:
        return "bad_tail"
    if checksum(frame[2:8]) != frame[8]:
        return "bad_checksum"
    return None


def _device_id(lo: int, hi: int) -> str:
    return f"{hi:02X}{lo:02X}"


def _checked(frame: bytes) -> bytes:
    frame = bytes(frame)
    if len(frame) < FRAME_SIZE:
        raise DecodeError("truncated", f"{len(frame)} of {FRAME_SIZE} bytes")
    problem = frame_problem(frame)
    if problem is not None:
        raise DecodeError(problem, frame.hex())
    return frame


def decode_frame(frame: bytes) -> Sds011Reading | Sds011Reply:
    """Decode one complete 10-byte frame (data or reply)."""
    f = _checked(frame)
    dev = _device_id(f[6], f[7])
    if f[1] == DATA_CMD:
        return Sds011Reading(
            pm2_5=int.from_bytes(f[2:4], "little") / 10,
            pm10=int.from_bytes(f[4:6], "little") / 10,
            device_id=dev,
        )
    return _reply(f, dev)


def _reply(f: bytes, dev: str) -> Sds011Reply:
    cmd = f[2]
    name = _REPLY_NAMES.get(cmd)
    if name is None:
        raise DecodeError("unknown_reply", f"command 0x{cmd:02x}")
    is_set = f[3] == 1
    value: int | str
    if cmd == REPORTING_MODE:
        value = "query" if f[4] else "active"
    elif cmd == SLEEP_WORK:
        value = "work" if f[4] else "sleep"
    elif cmd == WORKING_PERIOD:
        value = f[4]
    elif cmd == FIRMWARE:
        value, is_set = f"{f[3]:02d}-{f[4]:02d}-{f[5]:02d}", False
    else:
        value, is_set = dev, True
    return Sds011Reply(command=name, is_set=is_set, value=value, device_id=dev)


def _id_bytes(device_id: str) -> bytes:
    try:
        value = int(device_id, 16)
    except ValueError:
        value = -1
    if len(device_id) != 4 or not 0 <= value <= 0xFFFF:
        raise ValueError(f"device id must be 4 hex digits (got {device_id!r})")
    return value.to_bytes(2, "little")


def command(cmd: int, data: bytes = b"", device_id: str = ANY_DEVICE) -> bytes:
    """A 19-byte command frame: ``cmd``, up to 12 data bytes, target device, checksum."""
    if not 0 <= cmd <= 0xFF or len(data) > 12:
        raise ValueError(f"command 0x{cmd:x} with {len(data)} data bytes")
    body = bytes([cmd]) + data.ljust(12, b"\0") + _id_bytes(device_id)
    return bytes([HEAD, REQUEST_CMD]) + body + bytes([checksum(body), TAIL])


def cmd_query_data(device_id: str = ANY_DEVICE) -> bytes:
    """Ask for one data frame (query reporting mode)."""
    return command(QUERY_DATA, b"", device_id)


def cmd_set_reporting_mode(query: bool, device_id: str = ANY_DEVICE) -> bytes:
    """Active mode sends a frame every period; query mode answers :func:`cmd_query_data`."""
    return command(REPORTING_MODE, bytes([1, 1 if query else 0]), device_id)


def cmd_get_reporting_mode(device_id: str = ANY_DEVICE) -> bytes:
    return command(REPORTING_MODE, bytes([0, 0]), device_id)


def cmd_set_working_period(minutes: int, device_id: str = ANY_DEVICE) -> bytes:
    """0 = continuous; 1..30 = work 30 s then sleep for the rest of n minutes."""
    if not 0 <= minutes <= 30:
        raise ValueError(f"working period must be 0..30 minutes (got {minutes})")
    return command(WORKING_PERIOD, bytes([1, minutes]), device_id)


def cmd_set_sleep(sleep: bool, device_id: str = ANY_DEVICE) -> bytes:
    return command(SLEEP_WORK, bytes([1, 0 if sleep else 1]), device_id)


def decode_sds011(data: bytes) -> dict[str, Any]:
    """The first good frame in ``data`` (a stream: leading garbage is skipped)."""
    # Imported here: the framer module builds on this one.
    from cityedge.drivers.serial.framing import Frame, Sds011Framer

    first_reason: str | None = None
    for item in Sds011Framer().feed(bytes(data)):
        if isinstance(item, Frame):
            return decode_frame(item.data).to_dict()
        if item.reason != "garbage" and first_reason is None:
            first_reason = item.reason
    if first_reason is not None:
        raise DecodeError(first_reason, "no good frame")
    raise DecodeError("truncated" if HEAD in bytes(data) else "no_frame", f"{len(data)} bytes")
