"""Answers to the MAC commands an end device asks the network server for.

Two requests come from devices themselves (LoRaWAN 1.0.x, section 5):

* ``LinkCheckReq`` (CID 0x02): answered by ``LinkCheckAns``: the margin in dB
  of the request above the demodulation floor for its spreading factor (0 to
  254), and how many gateways heard it. A device uses it to see whether it is
  still connected, and how well.
* ``DeviceTimeReq`` (CID 0x0D, 1.0.3): answered by ``DeviceTimeAns``: the time
  the uplink was received, as seconds since the GPS epoch (1980-01-06, GPS
  time: UTC plus the leap seconds since) in 4 bytes little-endian, then the
  fraction of a second in 1/256 steps. The concentrator's own GPS time of
  reception (``tmms``) when it has one; else this box's clock, and only while
  that is synchronised: a wrong time sent to a device is worse than none.

Pure functions: no I/O, so every rule here is tested directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from cityedge.drivers.lorawan.phy import MacCommand

LINK_CHECK_ANS = 0x02
DEVICE_TIME_ANS = 0x0D
# Demodulation floor of a LoRa receiver per spreading factor (SNR in dB, the
# SX1276/SX1301 datasheets' table); the margin is the SNR above it.
DEMOD_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
GPS_LEAP_S = 18  # GPS - UTC since 2017-01-01; no leap second has been added since
FOPTS_MAX = 15
_SF = re.compile(r"SF(\d+)BW\d+")


def margin_db(snr: float | None, datr: str | int) -> int:
    """LinkCheckAns margin: the SNR above the floor of the uplink's SF, 0..254."""
    m = _SF.fullmatch(str(datr))
    if snr is None or m is None or int(m.group(1)) not in DEMOD_FLOOR_DB:
        return 0
    return max(0, min(254, int(snr - DEMOD_FLOOR_DB[int(m.group(1))])))


def link_check_ans(snr: float | None, datr: str | int, gateways: int) -> bytes:
    return bytes((LINK_CHECK_ANS, margin_db(snr, datr), max(0, min(255, gateways))))


def gps_time(at: datetime) -> tuple[int, int]:
    """(seconds since the GPS epoch modulo 2**32, fraction in 1/256 s) of a UTC time."""
    since = (at - GPS_EPOCH).total_seconds() + GPS_LEAP_S
    whole = int(since // 1)
    return whole % 2**32, min(255, int((since - whole) * 256))


def device_time_ans(seconds: int, fraction: int) -> bytes:
    return bytes((DEVICE_TIME_ANS,)) + seconds.to_bytes(4, "little") + bytes((fraction,))


def gps_ms_time(gps_ms: int) -> tuple[int, int]:
    """(seconds modulo 2**32, 1/256 fraction) of a gateway's GPS time in ms (rxpk ``tmms``)."""
    return (gps_ms // 1000) % 2**32, (gps_ms % 1000) * 256 // 1000


def answers(
    commands: Iterable[MacCommand],
    *,
    snr: float | None,
    datr: str | int,
    gateways: int,
    received: datetime,
    clock_ok: bool,
    gps_ms: int | None = None,
) -> tuple[bytes, list[str]]:
    """FOpts answering the requests among ``commands``, and what went unanswered (why).

    Each kind is answered once however often it was asked; other commands
    (answers to the server's own requests) need no reply.
    """
    names = {c.name for c in commands}
    out = b""
    skipped: list[str] = []
    if "LinkCheckReq" in names:
        out += link_check_ans(snr, datr, gateways)
    if "DeviceTimeReq" in names:
        if gps_ms is not None and gps_ms >= 0:  # the gateway's GPS time of reception: best
            out += device_time_ans(*gps_ms_time(gps_ms))
        elif clock_ok:
            out += device_time_ans(*gps_time(received))
        else:
            skipped.append("device_time_clock_unsynced")
    assert len(out) <= FOPTS_MAX  # 3 + 6 bytes at most
    return out, skipped
