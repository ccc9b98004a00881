"""Simulated serial sensors on pseudo-terminals, for the demo.

:class:`PtySensor` plays a sensor on the master side of a pty; the driver
opens :attr:`PtySensor.path`, a symlink to the slave side (as udev's
``/dev/serial/by-id`` names a USB adapter). Once a second the sensor writes
what its frame builder returns:

* :func:`pms5003_frame` - a Plantower PMS5003 active-mode data frame (32
  bytes, valid checksum) from :class:`AirQuality`, particulate values that
  drift with a slow daily-ish swing, noise and the odd traffic spike;
* :func:`nmea_fix` - a GPS receiver's ``$GPRMC`` and ``$GPGGA`` sentences
  (valid checksums) for a fix that wanders a metre or so around a point.

Whatever the driver writes (commands) is read and counted, never answered:
the demo runs the sensors in active mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import tty
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cityedge.drivers.serial import nmea, pms5003

FrameBuilder = Callable[[float], bytes]


class AirQuality:
    """PM mass concentrations (ug/m3) that move like a street-side sensor's."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.spike = 0.0

    def sample(self, t: float) -> tuple[int, int, int]:
        """(PM1.0, PM2.5, PM10) at ``t`` seconds."""
        if self.rng.random() < 0.03:  # a bus or a lorry passes
            self.spike = self.rng.uniform(8, 25)
        self.spike *= 0.8
        base = 9.0 + 4.0 * math.sin(t / 90.0) + self.spike + self.rng.gauss(0, 0.8)
        pm25 = max(1.0, base)
        pm1 = pm25 * 0.7 + self.rng.gauss(0, 0.3)
        pm10 = pm25 * 1.6 + self.rng.gauss(0, 0.8)
        return round(max(0.0, pm1)), round(pm25), round(max(pm25, pm10))


def pms5003_frame(pm1: int, pm25: int, pm10: int) -> bytes:
    """A valid PMS5003 data frame: CF=1 and atmospheric values, particle counts."""
    counts = [pm25 * 120, pm25 * 35, pm25 * 6, pm10 // 2, pm10 // 8, pm10 // 20]
    cf1 = [round(v * 1.05) for v in (pm1, pm25, pm10)]
    words = [*cf1, pm1, pm25, pm10, *counts, 0]
    body = pms5003.START + pms5003.DATA_LENGTH.to_bytes(2, "big")
    body += b"".join(w.to_bytes(2, "big") for w in words)
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def pms5003_builder(seed: int | None = None) -> FrameBuilder:
    air = AirQuality(seed)
    return lambda t: pms5003_frame(*air.sample(t))


def _sentence(body: str) -> bytes:
    return f"${body}*{nmea.checksum(body):02X}\r\n".encode("ascii")


def _ddmm(value: float, deg_digits: int) -> str:
    deg = int(abs(value))
    return f"{deg:0{deg_digits}d}{(abs(value) - deg) * 60:07.4f}"


def nmea_fix(lat: float, lon: float, when: datetime, satellites: int = 9) -> bytes:
    """``$GPRMC`` and ``$GPGGA`` for one fix (northern/eastern hemisphere)."""
    hms = when.strftime("%H%M%S") + f".{when.microsecond // 10000:02d}"
    la, lo = _ddmm(lat, 2), _ddmm(lon, 3)
    rmc = f"GPRMC,{hms},A,{la},N,{lo},E,0.02,,{when.strftime('%d%m%y')},,,A"
    gga = f"GPGGA,{hms},{la},N,{lo},E,1,{satellites:02d},0.9,41.5,M,44.0,M,,"
    return _sentence(rmc) + _sentence(gga)


def nmea_builder(lat: float, lon: float, seed: int | None = None) -> FrameBuilder:
    rng = random.Random(seed)

    def build(_t: float) -> bytes:
        jitter = 1e-5  # about a metre
        return nmea_fix(lat + rng.gauss(0, jitter), lon + rng.gauss(0, jitter),
                        datetime.now(UTC), rng.choice((8, 9, 9, 10)))  # fmt: skip

    return build


class PtySensor:
    """A sensor on a pty, writing ``build(t)`` every ``every_s`` seconds."""

    def __init__(self, path: Path, build: FrameBuilder, every_s: float = 1.0) -> None:
        self.path = path
        self.build = build
        self.every_s = every_s
        self.frames = 0
        self.dropped = 0  # the driver was not reading and the pty buffer was full
        self.received = 0  # bytes the driver wrote to the sensor
        self._fds: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes as they are
        os.set_blocking(master, False)
        # The slave stays open here, so the master never sees a hangup while
        # the driver closes and reopens its end.
        self._fds = (master, slave)
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        asyncio.get_running_loop().add_reader(master, self._drain)
        self._task = asyncio.create_task(self._run(), name=f"pty-sensor-{self.path.name}")

    def _drain(self) -> None:
        if self._fds is None:
            return
        with contextlib.suppress(OSError):
            self.received += len(os.read(self._fds[0], 4096))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            self.write(self.build(loop.time() - t0))
            await asyncio.sleep(self.every_s)

    def write(self, data: bytes) -> None:
        """Send one frame; if the line is backed up, drop it (counted) as a UART would."""
        if self._fds is None:
            return
        try:
            os.write(self._fds[0], data)
            self.frames += 1
        except BlockingIOError:
            self.dropped += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._fds is not None:
            asyncio.get_running_loop().remove_reader(self._fds[0])
            for fd in self._fds:
                os.close(fd)
            self._fds = None
        self.path.unlink(missing_ok=True)
