"""A serial sensor on loopback: the sensor's end of a pty, and helpers to run a source.

The driver opens a stable path (a symlink, as udev's ``/dev/serial/by-id``
gives a USB adapter) that points at the slave side of a pty; the test plays
the sensor on the master side: what it writes the driver reads, what the
driver writes (commands) the test reads. ``unplug()`` closes both sides and
removes the link, as pulling the adapter does (the driver's next read fails
with ``EIO``); ``plug()`` makes a new pty and points the link at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cityedge.config.model import BusConfig, DeviceConfig, SiteConfig
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.serial.driver import SerialSensorSource
from cityedge.readings import Quality, Reading
from cityedge.sources import SourceContext

PROFILES = Path(__file__).resolve().parents[2] / "firmware-profiles"
SITE = SiteConfig(id="site", gateway_id="gw-1", latitude=52.52, longitude=13.40)


class SensorPort:
    """The sensor's side of a serial line; the driver opens :attr:`path`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "ttySENSOR"
        self._master = -1
        self._slave = -1

    def plug(self) -> None:
        self.unplug()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def write(self, data: bytes) -> None:
        """Send bytes as the sensor (a few KiB at most: the pty buffer is not drained here)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def received(self) -> bytes:
        """What the driver has written so far (not yet taken)."""
        out = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._master, 4096):
                out += chunk
        return out

    async def expect(self, data: bytes, within_s: float = 3.0) -> bytes:
        """Wait until the driver has written ``data``; return everything it wrote."""
        got = b""
        deadline = time.monotonic() + within_s
        while data not in got:
            assert time.monotonic() < deadline, f"driver did not send {data.hex()}: {got.hex()}"
            await asyncio.sleep(0.01)
            got += self.received()
        return got


@asynccontextmanager
async def sensor_port(folder: Path) -> AsyncIterator[SensorPort]:
    port = SensorPort(folder)
    port.plug()
    try:
        yield port
    finally:
        port.unplug()


class Collector:
    """A reading sink that keeps everything it is given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.event = asyncio.Event()

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self.event.set()

    def points(self, point: str, quality: Quality | None = None) -> list[Reading]:
        return [
            r for r in self.readings
            if r.point == point and (quality is None or r.quality == quality)
        ]  # fmt: skip

    def values(self, point: str) -> list[Any]:
        return [r.value for r in self.points(point, Quality.GOOD)]

    async def wait_for(self, check: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait until ``check()`` holds, re-checking on every batch."""
        async with asyncio.timeout(within_s):
            while not check():
                self.event.clear()
                await self.event.wait()


def sensor(
    port: SensorPort,
    profile: str,
    *,
    silence_s: float = 5.0,
    mode: str | None = None,
    poll_interval_s: float = 1.0,
    device_id: str = "s1",
) -> tuple[BusConfig, DeviceConfig]:
    """A serial-sensor bus on ``port`` with one device of a real profile."""
    bus = BusConfig(name="uart1", type="serial-sensor", device=str(port.path), baudrate=9600,
                    timeout_s=0.5, options={"silence_s": silence_s})  # fmt: skip
    options = {} if mode is None else {"sensor_mode": mode}
    device = DeviceConfig(id=device_id, bus="uart1", profile_name=profile,
                          profile=load_profile(PROFILES, profile),
                          poll_interval_s=poll_interval_s, options=options)  # fmt: skip
    return bus, device


CTX = SourceContext(SITE, Path("/nonexistent"))


def make_source(bus: BusConfig, device: DeviceConfig, **kw: Any) -> SerialSensorSource:
    """The source :func:`build_source` makes, with quick reopens for tests."""
    kw = {"reopen_min_s": 0.05, "reopen_max_s": 0.2, **kw}
    return SerialSensorSource(bus, device, CTX.cell_for(device), **kw)


@asynccontextmanager
async def running(
    source: SerialSensorSource, sink: Collector, *, connected: bool = True
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source.run(sink)``; wait until the port is open; cancel and check on exit."""
    task = asyncio.create_task(source.run(sink))
    try:
        if connected:
            await wait_until(lambda: source.connected)
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        assert not left, f"tasks left behind: {left}"


async def wait_until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
