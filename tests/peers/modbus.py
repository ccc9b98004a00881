"""Real Modbus peers for tests: the simulator on a free loopback port or a pty.

Tests are plain functions decorated with :func:`async_test`, which runs
them in a fresh event loop and fails them if they leave a task or a thread
behind (as pymodbus's own suite does).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.profiles import Point, Profile
from cityedge.readings import Reading
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.pty import PtyLink, pty_link


def async_test(
    fn: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an async test; fail it if it leaks a task or a thread."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        threads = set(threading.enumerate())

        async def main() -> None:
            await fn(*args, **kwargs)
            for _ in range(3):
                await asyncio.sleep(0)
            me = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            assert not left, f"tasks left behind: {left}"

        asyncio.run(main())
        extra = [t for t in set(threading.enumerate()) - threads if t.is_alive()]
        assert not extra, f"threads left behind: {extra}"

    return wrapper


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_profile(points: Sequence[Point], name: str = "test/meter", **kw: Any) -> Profile:
    vendor, model = name.split("/")
    return Profile(name=name, vendor=vendor, model=model, family="energy",
                   points=tuple(points), **kw)  # fmt: skip


def device(dev_id: str, unit: int, profile: Profile, bus: str = "field", **kw: Any) -> DeviceConfig:
    return DeviceConfig(id=dev_id, bus=bus, unit_id=unit, profile_name=profile.name,
                        profile=profile, **kw)  # fmt: skip


class Collector:
    """A reading sink that keeps everything it is given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.event = asyncio.Event()

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self.event.set()

    def of(self, device: str, good: bool | None = None) -> list[Reading]:
        return [
            r for r in self.readings
            if r.device == device and (good is None or (r.quality == "good") == good)
        ]  # fmt: skip

    async def wait_for(self, check: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait until ``check()`` holds, re-checking on every batch."""
        async with asyncio.timeout(within_s):
            while not check():
                self.event.clear()
                await self.event.wait()


@asynccontextmanager
async def tcp_sim(units: dict[int, Profile]) -> AsyncIterator[tuple[ModbusSim, BusConfig]]:
    """A simulator on a free loopback port and a bus config pointing at it."""
    port = free_port()
    sim = ModbusSim(units, port=port)
    async with sim:
        yield sim, BusConfig(name="field", type="modbus-tcp", port=port, timeout_s=0.5)


@asynccontextmanager
async def rtu_sim(
    units: dict[int, Profile], baudrate: int = 19200, timed: bool = False
) -> AsyncIterator[tuple[ModbusSim, BusConfig, PtyLink]]:
    """A simulator as RTU slaves on one end of a pty link; the bus on the other."""
    async with pty_link(baudrate if timed else None) as link:
        sim = ModbusSim(units, serial_port=link.a, baudrate=baudrate)
        async with sim:
            bus = BusConfig(name="field", type="modbus-rtu", device=link.b,
                            baudrate=baudrate, timeout_s=0.5)  # fmt: skip
            yield sim, bus, link


@asynccontextmanager
async def running(source: Any, sink: Collector) -> AsyncIterator[asyncio.Task[None]]:
    """Run a source's ``run(sink)`` in a task, cancelled on exit."""
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
