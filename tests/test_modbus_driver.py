"""The whole Modbus driver (planner, codec, transport, scheduler) against a real pymodbus server."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cityedge.config.model import BusConfig
from cityedge.drivers.modbus.client import ModbusClient, ModbusDevice
from cityedge.drivers.modbus.plan import ReadRequest
from cityedge.drivers.modbus.scheduler import ModbusBus
from cityedge.errors import DeviceTimeout
from cityedge.profiles import Point, Profile
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.modbus import (
    Collector,
    async_test,
    device,
    make_profile,
    rtu_sim,
    running,
    tcp_sim,
)

VECTORS = json.loads(Path("/work/shared/vectors/modbus_encodings.json").read_text())


def _vector_points() -> tuple[list[Point], dict[str, Any]]:
    """One point per published vector, each over its own copy of the wire bytes."""
    points: list[Point] = []
    expected: dict[str, Any] = {}
    for i, vec in enumerate(VECTORS["vectors"]):
        for j, kind in enumerate(("int32", "uint32", "float32")):
            if kind in vec:
                name = f"{kind}_{vec['order'].lower()}"
                points.append(Point(name, "holding", 100 + 8 * i + 2 * j, kind, order=vec["order"]))
                expected[name] = vec[kind]
    for k, order in enumerate(("AB", "BA")):
        name = f"int16_{order.lower()}"
        points.append(Point(name, "input", 10 + k, "int16", order=order))
        expected[name] = VECTORS["int16"][order]
    return points, expected


@asynccontextmanager
async def _peer(kind: str, units: dict[int, Profile]) -> AsyncIterator[tuple[ModbusSim, BusConfig]]:
    if kind == "tcp":
        async with tcp_sim(units) as (sim, bus):
            yield sim, bus
    else:
        async with rtu_sim(units) as (sim, bus, _link):
            yield sim, bus


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@async_test
async def test_published_vectors_decode_through_the_driver(kind: str) -> None:
    """Every published encoding reads back right through the whole driver (TCP and RTU)."""
    points, expected = _vector_points()
    profile = make_profile(points)
    async with _peer(kind, {7: profile}) as (sim, bus):
        for p in points:
            sim.pin(7, p.register, p.address, [0xABCD] if p.type == "int16" else [0xAABB, 0xCCDD])
        modbus = ModbusBus(bus, [(device("m", 7, profile), "cell")])
        async with running(modbus, Collector()):
            await asyncio.sleep(0.05)
            readings = {r.point: r for r in await modbus.read_now("m")}
    assert set(readings) == set(expected)
    for name, want in expected.items():
        got = readings[name]
        assert got.quality == "good", got
        if isinstance(want, float):
            assert math.isclose(got.value, want, rel_tol=1e-7), name  # type: ignore[arg-type]
        else:
            assert got.value == want, name


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@async_test
async def test_coalesced_requests_are_what_the_server_sees(kind: str) -> None:
    """A poll issues exactly the planned coalesced requests, counted at the server."""
    profile = make_profile(
        [
            Point("a", "input", 0, "float32"),
            Point("b", "input", 4, "float32"),  # hole of 2: same request
            Point("c", "input", 40, "uint16"),  # hole of 34: a new request
            Point("d", "holding", 0, "uint16"),
            Point("e", "holding", 1, "uint16"),
            Point("f", "coil", 3, "bool"),
            Point("g", "coil", 9, "bool"),
        ],
        max_gap=8,
    )
    async with _peer(kind, {1: profile}) as (sim, bus):
        modbus = ModbusBus(bus, [(device("m", 1, profile, poll_interval_s=60), "cell")])
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.readings) >= 7)
    assert [(r.register, r.start, r.count) for r in modbus._devices["m"].requests] == [
        ("coil", 3, 7), ("holding", 0, 2), ("input", 0, 6), ("input", 40, 1),
    ]  # fmt: skip
    assert dict(sim.requests) == {(1, 1): 1, (1, 3): 1, (1, 4): 2}
    assert all(r.quality == "good" for r in sink.readings)


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@async_test
async def test_exception_reply_is_a_bad_reading_with_its_code(kind: str) -> None:
    """An exception reply turns that request's points bad with the exception code."""
    profile = make_profile(
        [Point("ok", "input", 0, "uint16"), Point("broken", "holding", 5, "uint16")]
    )
    async with _peer(kind, {1: profile}) as (sim, bus):
        sim.fail(1, "holding", 5, code=2)
        modbus = ModbusBus(bus, [(device("m", 1, profile), "cell")])
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: bool(sink.of("m", False)))  # the first poll
            readings = {r.point: r for r in await modbus.read_now("m")}
        st: Any = modbus.status()["devices"]["m"]  # type: ignore[index]
    # Alive (no retry, no backoff) but refusing: not plain ok, and counted.
    assert (st["state"], st["polls"], st["errors"]) == ("exception", 1, {"modbus_exception": 1})
    assert readings["ok"].quality == "good"
    broken = readings["broken"]
    assert (broken.quality, broken.reason, broken.code, broken.value) == (
        "bad", "modbus_exception", 2, None,
    )  # fmt: skip


@async_test
async def test_late_reply_is_not_taken_for_the_next_one() -> None:
    """On RTU a reply arriving after its timeout is not returned as the next request's answer."""
    profile = make_profile(
        [Point("x", "holding", 0, "uint16"), Point("y", "holding", 50, "uint16")]
    )
    async with rtu_sim({1: profile}) as (sim, bus, _link):
        sim.pin(1, "holding", 0, [1111])
        sim.pin(1, "holding", 50, [2222])
        slow = ModbusDevice("m", 1, timeout_s=0.05)
        x = ReadRequest("holding", 0, 1, (profile.point("x"),))
        y = ReadRequest("holding", 50, 1, (profile.point("y"),))
        async with ModbusClient(bus) as client:
            sim.delay_s[1] = 0.08
            with pytest.raises(DeviceTimeout):
                await client.read(slow, x)
            sim.delay_s[1] = 0.06
            # The late reply to x (1111) lands while we wait for y's (2222).
            got = [await client.read(ModbusDevice("m", 1, 0.5), y) for _ in range(3)]
            await asyncio.sleep(0.1)
    assert [g[0].value for g in got] == [2222, 2222, 2222]
