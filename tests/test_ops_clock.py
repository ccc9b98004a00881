"""Time quality: ClockState's evidence, and polling through wall-clock steps."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cityedge.clock import ClockState, kernel_synced
from cityedge.drivers.modbus import build_source
from cityedge.profiles import Point
from cityedge.readings import Reading
from tests.contract.base import context
from tests.peers.modbus import async_test, device, make_profile, running, tcp_sim

REAL_TIME = time.time


class Clocks:
    """A wall clock we can step and a monotonic clock we can advance."""

    def __init__(self) -> None:
        self.wall_s = 1_700_000_000.0
        self.mono_s = 100.0

    def wall(self) -> float:
        return self.wall_s

    def mono(self) -> float:
        return self.mono_s

    def tick(self, s: float) -> None:
        self.wall_s += s
        self.mono_s += s


def test_kernel_synced_answers_or_abstains() -> None:
    """adjtimex read-only gives True, False or None (cannot ask), never raises."""
    assert kernel_synced() in (True, False, None)


def test_no_evidence_means_not_ok(tmp_path: Path) -> None:
    """Without NTP, timesyncd or GPS evidence the clock is not trusted."""
    clock = ClockState(kernel=lambda: None, timesyncd_flag=tmp_path / "synchronized")
    assert not clock.ok()
    assert clock.state() == {"ok": False, "source": None, "kernel": None, "timesyncd": False,
                             "gps": None, "steps": 0, "last_step_s": None}  # fmt: skip


def test_timesyncd_flag_and_kernel(tmp_path: Path) -> None:
    """timesyncd's flag file or the kernel's sync status make the clock ok."""
    c = Clocks()
    flag = tmp_path / "synchronized"
    kernel: list[bool | None] = [None]
    clock = ClockState(kernel=lambda: kernel[0], timesyncd_flag=flag, recheck_s=5,
                       wall=c.wall, monotonic=c.mono)  # fmt: skip
    assert not clock.ok()
    flag.touch()
    assert not clock.ok()  # cached until recheck_s has passed
    c.tick(5)
    assert clock.ok() and clock.state()["source"] == "timesyncd"
    flag.unlink()
    kernel[0] = True
    c.tick(5)
    assert clock.ok() and clock.state()["source"] == "kernel"
    kernel[0] = False
    c.tick(5)
    assert not clock.ok()


def test_gps_reference() -> None:
    """A fresh agreeing GPS fix makes the clock ok, a wrong one overrules NTP; old ones expire."""
    c = Clocks()
    clock = ClockState(kernel=lambda: True, timesyncd_flag=None, recheck_s=0,
                       gps_fresh_s=60, wall=c.wall, monotonic=c.mono)  # fmt: skip
    clock.reference(datetime.fromtimestamp(c.wall_s + 0.4, UTC), c.mono_s)
    assert clock.ok() and clock.state()["source"] == "gps"
    assert clock.state()["gps"]["offset_s"] == 0.4
    clock.reference(c.wall_s - 3601, c.mono_s - 1)  # the clock is an hour fast
    assert not clock.ok()
    assert clock.state()["gps"] == {"offset_s": -3600.0, "age_s": 1.0, "agrees": False}
    c.tick(61)
    assert clock.ok() and clock.state()["source"] == "kernel"  # the fix expired


def test_steps_are_noticed_and_gps_follows_them() -> None:
    """A wall-clock step is counted with its size; a GPS offset taken before it is corrected."""
    c = Clocks()
    clock = ClockState(kernel=lambda: None, timesyncd_flag=None, recheck_s=0,
                       wall=c.wall, monotonic=c.mono)  # fmt: skip
    clock.reference(c.wall_s - 3600, c.mono_s)  # GPS: we are an hour fast
    assert not clock.ok()
    c.wall_s -= 3600  # NTP steps the clock back to the right time
    c.tick(1)
    assert clock.ok()
    st = clock.state()
    assert st["steps"] == 1 and st["last_step_s"] == -3600.0 and st["gps"]["agrees"]


class SteppedWall:
    """The real wall clock plus an offset the test steps."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def time(self) -> float:
        return REAL_TIME() + self.offset_s

    def utc_now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)


class Recorder:
    """A sink that keeps each batch with the monotonic time and the test phase it arrived in."""

    def __init__(self) -> None:
        self.phase = "A"
        self.batches: list[tuple[float, str, Sequence[Reading]]] = []

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.batches.append((time.monotonic(), self.phase, list(readings)))


PROFILE = make_profile([Point("voltage", "input", 0, "float32", unit="V")])
INTERVAL_S = 0.05


@async_test
async def test_wall_clock_steps_during_polling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Wall clock +1 h, -1 h, -1 h while polling: intervals stay regular, readings are flagged."""
    wall = SteppedWall()
    monkeypatch.setattr(time, "time", wall.time)
    monkeypatch.setattr("cityedge.drivers.modbus.client.utc_now", wall.utc_now)
    monkeypatch.setattr("cityedge.drivers.modbus.stats.utc_now", wall.utc_now)
    synced = [False]
    clock = ClockState(kernel=lambda: synced[0], timesyncd_flag=None, recheck_s=0)
    ctx = context(tmp_path)
    ctx = type(ctx)(ctx.site, ctx.state_dir, clock_ok=clock.ok)
    sink = Recorder()
    phases = [("A", 0.0), ("B", 3600.0), ("C", 0.0), ("D", -3600.0), ("E", -3600.0)]
    async with tcp_sim({1: PROFILE}) as (_sim, bus):
        source = build_source(bus, [device("m1", 1, PROFILE, poll_interval_s=INTERVAL_S)], ctx)
        async with running(source, sink):
            await asyncio.sleep(0.2)  # connect and settle
            start = time.monotonic()
            for phase, offset in phases:
                sink.phase, wall.offset_s = phase, offset
                synced[0] = phase == "E"
                await asyncio.sleep(0.4)
            elapsed = time.monotonic() - start
    stamps = [t for t, _, _ in sink.batches if t >= start]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert abs(statistics.median(gaps) - INTERVAL_S) < 0.01, gaps
    assert max(gaps) < 3 * INTERVAL_S, f"polling stalled: {max(gaps):.3f} s"
    expected = elapsed / INTERVAL_S
    assert 0.8 * expected <= len(stamps) <= 1.1 * expected, (len(stamps), expected)
    for _, phase, readings in sink.batches:
        assert all(r.time_ok == (phase == "E") for r in readings), phase
    by_phase = {p: [r.ts.timestamp() - REAL_TIME() for _, q, rs in sink.batches if q == p
                    for r in rs] for p, _ in phases}  # fmt: skip
    assert min(by_phase["B"]) > 3500 and max(by_phase["D"]) < -3500  # the steps were real
    assert clock.steps == 3
