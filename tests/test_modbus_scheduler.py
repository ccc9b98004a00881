"""The bus scheduler against simulated devices over TCP and RTU on a pty."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from typing import Any

from cityedge.config.model import BusConfig
from cityedge.drivers.modbus.scheduler import ModbusBus
from cityedge.grid import cell_id
from cityedge.profiles import Point
from tests.peers.modbus import (
    Collector,
    async_test,
    device,
    make_profile,
    rtu_sim,
    running,
    tcp_sim,
)

PROFILE = make_profile(
    [
        Point("voltage", "input", 0, "float32", unit="V"),
        Point("energy", "input", 4, "float32", unit="kWh"),
        Point("temperature", "holding", 0, "int16", unit="Cel", scale=0.1),
    ]
)


@async_test
async def test_polls_devices_over_tcp() -> None:
    """Every device on a TCP bus is polled and its points arrive with good quality."""
    async with tcp_sim({1: PROFILE, 2: PROFILE}) as (_sim, bus):
        devs = [
            device("m1", 1, PROFILE, poll_interval_s=0.1),
            device("m2", 2, PROFILE, poll_interval_s=0.1),
        ]
        modbus = ModbusBus.from_config(bus, devs, 52.52, 13.40, 500)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(
                lambda: len(sink.of("m1", True)) >= 6 and len(sink.of("m2", True)) >= 6
            )
        assert {r.cell for r in sink.readings} == {cell_id(52.52, 13.40, 500)}
        assert modbus.status()["devices"]["m1"]["polls"] >= 2  # type: ignore[index]


def _intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


@async_test
async def test_silent_device_does_not_slow_the_others_on_rtu() -> None:
    """On a shared RS-485 line one silent slave leaves the others' poll rate intact."""
    units = {1: PROFILE, 2: PROFILE, 3: PROFILE}
    async with rtu_sim(units, baudrate=19200) as (sim, bus, _link):
        sim.silent.add(3)
        devs = [
            device("m1", 1, PROFILE, poll_interval_s=0.2, timeout_s=0.1),
            device("m2", 2, PROFILE, poll_interval_s=0.2, timeout_s=0.1),
            device("dead", 3, PROFILE, poll_interval_s=0.2, timeout_s=0.1, retries=1,
                   backoff_max_s=0.4),
        ]  # fmt: skip
        modbus = ModbusBus.from_config(bus, devs, 52.52, 13.40, 500)
        sink = Collector()
        stamps: dict[str, list[float]] = {"m1": [], "m2": []}
        loop = asyncio.get_running_loop()

        async def timed(readings):  # type: ignore[no-untyped-def]
            for name in stamps:
                if any(r.device == name and r.point == "voltage" for r in readings):
                    stamps[name].append(loop.time())
            await sink(readings)

        async with running(modbus, timed):
            await asyncio.sleep(2.05)
        bad = sink.of("dead", good=False)
        assert bad and {r.reason for r in bad} == {"timeout"}
        assert sim.request_count(unit=3) >= 3  # it kept being tried
        for name, seen in stamps.items():
            gaps = _intervals(seen)
            assert len(seen) >= 9, (name, len(seen))
            assert abs(statistics.mean(gaps) - 0.2) < 0.03, (name, gaps)
            assert max(gaps) < 0.2 + 0.1 + 0.05, (name, gaps)  # at most one timeout late
        status = modbus.status()["devices"]
        assert status["dead"]["state"] == "down"  # type: ignore[index]
        assert status["dead"]["errors"]["timeout"] >= 3  # type: ignore[index]


@async_test
async def test_dead_device_comes_back_by_itself() -> None:
    """A device that stops answering is reported bad, then recovers when it answers again."""
    async with rtu_sim({1: PROFILE}) as (sim, bus, _link):
        dev = device("m1", 1, PROFILE, poll_interval_s=0.05, timeout_s=0.05, retries=1,
                     backoff_max_s=0.2)  # fmt: skip
        modbus = ModbusBus.from_config(bus, [dev], 52.52, 13.40, 500)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m1", True)) >= 9)  # three polls: a rate
            assert modbus.status()["devices"]["m1"]["poll_rate_hz"] > 0  # type: ignore[index]
            sim.silent.add(1)
            await sink.wait_for(lambda: len(sink.of("m1", False)) >= 3)
            down: Any = modbus.status()["devices"]
            assert down["m1"]["state"] == "down"
            assert down["m1"]["poll_rate_hz"] == 0  # not the rate it had before it died
            good_before = len(sink.of("m1", True))
            sim.silent.discard(1)
            await sink.wait_for(lambda: len(sink.of("m1", True)) > good_before + 3)
        assert modbus.status()["devices"]["m1"]["state"] == "ok"  # type: ignore[index]


@async_test
async def test_tcp_server_restart_recovers() -> None:
    """When the TCP server goes away the points turn bad, and polling resumes when it returns."""
    async with tcp_sim({1: PROFILE}) as (sim, bus):
        dev = device("m1", 1, PROFILE, poll_interval_s=0.05, timeout_s=0.2)
        modbus = ModbusBus(bus, [(dev, "cell")], reopen_min_s=0.05, reopen_max_s=0.2)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m1", True)) >= 3)
            assert modbus.status()["reopens"] == 0  # the first open is not a reopen
            await sim.stop()
            await sink.wait_for(lambda: any(r.reason == "unreachable" for r in sink.readings))
            assert not modbus.connected
            await asyncio.sleep(0.3)  # a few refused reopens
            good_before = len(sink.of("m1", True))
            await sim.start()
            await sink.wait_for(lambda: len(sink.of("m1", True)) > good_before + 3)
            assert modbus.connected
        assert modbus.status()["reopens"] == 1  # refused attempts are transport_errors


@async_test
async def test_read_now_goes_through_the_queue_on_rtu() -> None:
    """read_now answers while polling runs on RTU, without colliding with it."""
    async with rtu_sim({1: PROFILE, 2: PROFILE}) as (_sim, bus, _link):
        devs = [
            device("m1", 1, PROFILE, poll_interval_s=0.02),
            device("m2", 2, PROFILE, poll_interval_s=0.02),
        ]
        modbus = ModbusBus.from_config(bus, devs, 52.52, 13.40, 500)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.readings) >= 6)
            results = await asyncio.gather(*(modbus.read_now("m2", ["voltage"]) for _ in range(5)))
        for readings in results:
            assert [(r.point, r.quality) for r in readings] == [("voltage", "good")]
            assert 225 < readings[0].value < 235  # type: ignore[operator]
        assert all(r.quality == "good" for r in sink.readings)
        assert modbus.status()["devices"]["m1"]["errors_total"] == 0  # type: ignore[index]


@async_test
async def test_exception_replies_are_errors_of_a_device_that_is_alive() -> None:
    """A unit answering only exceptions (0x0B behind a gateway) is errors, not plain ok."""
    async with tcp_sim({1: PROFILE, 2: PROFILE}) as (sim, bus):
        for register in ("input", "holding"):
            sim.fail(1, register, 0, code=11)
        devs = [device(f"m{u}", u, PROFILE, poll_interval_s=0.05) for u in (1, 2)]
        modbus = ModbusBus.from_config(bus, devs, 52.52, 13.40, 500)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m1", False)) >= 3 * 3)  # 3 polls, 3 points
            st: Any = modbus.status()["devices"]
            sim.exceptions.clear()
            await sink.wait_for(lambda: len(sink.of("m1", True)) >= 3)
            cleared: Any = modbus.status()["devices"]
    m1 = st["m1"]
    assert {r.reason for r in sink.of("m1", False)} == {"modbus_exception"}
    assert {r.code for r in sink.of("m1", False)} == {11}
    assert m1["state"] == "exception"
    assert m1["polls"] == 0 and m1["poll_rate_hz"] == 0  # no data came back
    assert m1["errors"] == {"modbus_exception": m1["errors_total"]}
    assert m1["errors_total"] >= 3
    assert abs(m1["errors_total"] - st["m2"]["polls"]) <= 1  # one per poll; no retry, no backoff
    want = "exception 11 (gateway target device failed to respond) to 2 of 2 requests"
    assert want in m1["last_error"]
    assert st["m2"]["state"] == "ok" and st["m2"]["errors_total"] == 0
    assert cleared["m1"]["state"] == "ok" and cleared["m1"]["polls"] >= 1


@async_test
async def test_one_refused_request_counts_an_error_and_the_poll() -> None:
    """One request of two answered by exception 2: the poll counts, and so does the error."""
    async with tcp_sim({1: PROFILE}) as (sim, bus):
        sim.fail(1, "holding", 0, code=2)
        modbus = ModbusBus.from_config(
            bus, [device("m1", 1, PROFILE, poll_interval_s=0.05)], 52.52, 13.40, 500
        )
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m1", False)) >= 2)
        m1: Any = modbus.status()["devices"]["m1"]  # type: ignore[index]
    assert {r.point for r in sink.of("m1", False)} == {"temperature"}
    assert {r.point for r in sink.of("m1", True)} == {"voltage", "energy"}
    assert m1["state"] == "exception"
    assert m1["polls"] == m1["errors"]["modbus_exception"] >= 2
    assert m1["last_error"].endswith("exception 2 (illegal data address) to 1 of 2 requests")


def test_a_late_poll_skips_missed_slots() -> None:
    """A poll that fell behind resumes on its monotonic grid, skipping missed slots, no burst."""
    bus = BusConfig(name="field", type="modbus-tcp")
    modbus = ModbusBus(bus, [(device("m1", 1, PROFILE, poll_interval_s=1.0), "cell")])
    dev = modbus._devices["m1"]
    dev.slot = 100.0
    assert modbus._next_slot(dev, now=100.2) == 101.0  # on time
    assert modbus._next_slot(dev, now=104.5) == 105.0  # 3 slots missed, not replayed
    assert dev.stats.skipped_slots == 3
    assert modbus._next_slot(dev, now=105.01) == 106.0


@async_test
async def test_a_peer_that_accepts_and_hangs_up_is_retried_ever_more_slowly() -> None:
    """Not a Modbus server (it accepts TCP, then closes): the reopen backoff grows; it is reset
    only by an answer, so the bus does not reconnect at the shortest interval for ever."""
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = BusConfig(name="field", type="modbus-tcp", port=port, timeout_s=0.2)
    dev = device("m1", 1, PROFILE, poll_interval_s=0.05, timeout_s=0.2)
    modbus = ModbusBus(bus, [(dev, "cell")], reopen_min_s=0.1, reopen_max_s=5.0)
    try:
        async with running(modbus, Collector()):
            await asyncio.sleep(3.0)
    finally:
        server.close()
        await server.wait_closed()
    # Doubling from 0.1 s (full jitter): about six opens in 3 s; without the growth, ~25.
    assert 2 <= accepted <= 15, accepted
