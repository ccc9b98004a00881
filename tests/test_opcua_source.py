"""OPC UA source against a real asyncua server on loopback (security None)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua.ua.status_codes import StatusCodes
from structlog.testing import capture_logs

from cityedge.config.model import DeviceConfig
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.opcua.client import Settings
from cityedge.drivers.opcua.source import OpcUaSource
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading
from tests.peers.modbus import async_test, free_port
from tests.peers.opcua import (
    PUMP_FIELDS,
    OpcUaPeer,
    opcua_bus,
    pump_device,
    pump_profile,
    running,
    serving,
    values,
    wait_until,
)


def make_source(
    url: str, state: Path, devices: list[DeviceConfig] | None = None, **options: Any
) -> OpcUaSource:
    bus = opcua_bus(url, **options)
    settings = Settings.from_options(url, bus.options, state_dir=state, timeout_s=2.0)
    devs = devices or [pump_device(poll_interval_s=0.1)]
    return OpcUaSource(bus, [(d, "cell-1") for d in devs], settings,
                       reopen_min_s=0.2, reopen_max_s=0.5)  # fmt: skip


@async_test
async def test_subscription_delivers_changes_and_respects_deadband(tmp_path: Path) -> None:
    """Data changes arrive by subscription; a change within the deadband is not reported."""
    fields = (FieldMap(key="ns=2;s=Pump1.Speed", name="speed", unit="1/min",
                       options={"deadband": 5, "deadband_type": "absolute",
                                "sampling_interval_ms": 10}),
              *PUMP_FIELDS[1:])  # fmt: skip
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path, [pump_device(pump_profile(fields))])
        async with running(source) as col:
            await wait_until(lambda: values(col, "speed") == [0.0])
            for v in (2.0, 10.0, 12.0, 20.0):
                await peer.set("Speed", v)
                await asyncio.sleep(0.15)
            await wait_until(lambda: len(values(col, "speed")) >= 3)
            await asyncio.sleep(0.1)
            assert values(col, "speed") == [0.0, 10.0, 20.0]
            status = source.status()
    assert status["mode"] == "subscribe" and status["connected"] is True
    assert "poll_interval_s" not in status["devices"]["pump1"]  # type: ignore[operator]
    speed = next(r for r in col.readings if r.point == "speed")
    assert (speed.device, speed.unit, speed.cell) == ("pump1", "1/min", "cell-1")
    assert speed.ts.tzinfo is not None


@async_test
async def test_values_by_node_id_and_browse_path_with_status_mapping(tmp_path: Path) -> None:
    """Numeric and string node ids and a browse path resolve; a Bad node reads bad with its code."""
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path)
        async with running(source) as col:
            await wait_until(
                lambda: {r.point for r in col.readings} >= {p.name for p in PUMP_FIELDS}
            )
            await peer.set("Counter", 7)
            await peer.set("Pressure", 2.5, StatusCodes.UncertainLastUsableValue)
            await wait_until(lambda: 7 in values(col, "counter"))
            await wait_until(lambda: any(r.quality is Quality.UNCERTAIN for r in col.readings))
    assert values(col, "pressure")[0] == 0.15  # 1.5 * scale 0.1, found by browse path
    sensor = next(r for r in col.readings if r.point == "sensor")
    assert (sensor.quality, sensor.reason, sensor.code, sensor.value) == (
        Quality.BAD, "BadSensorFailure", StatusCodes.BadSensorFailure, None)  # fmt: skip
    uncertain = next(r for r in col.readings if r.quality is Quality.UNCERTAIN)
    assert (uncertain.point, uncertain.value, uncertain.reason) == (
        "pressure", 0.25, "UncertainLastUsableValue")  # fmt: skip


@async_test
async def test_polling_mode_reads_all_nodes(tmp_path: Path) -> None:
    """mode = poll reads every node per poll interval and sees changes."""
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path, mode="poll")
        async with running(source) as col:
            await wait_until(lambda: 0.0 in values(col, "speed"))
            await peer.set("Speed", 33.0)
            await wait_until(lambda: 33.0 in values(col, "speed"))
            status = source.status()
    assert status["mode"] == "poll"
    devices: Any = status["devices"]
    assert devices["pump1"]["polls"] >= 2
    assert devices["pump1"]["poll_interval_s"] == 0.1  # the health message expects its polls
    assert status["notifications"] == 0


@async_test
async def test_refused_subscription_falls_back_to_polling(tmp_path: Path) -> None:
    """A server refusing subscriptions is polled instead, and the refusal is counted."""
    async with serving(OpcUaPeer(free_port(), refuse_subscriptions=True)) as peer:
        source = make_source(peer.url, tmp_path)
        async with running(source) as col:
            await peer.set("Speed", 4.0)
            await wait_until(lambda: 4.0 in values(col, "speed"))
            status = source.status()
    assert status["mode"] == "poll"
    assert status["subscription_refused"] == 1
    assert status["devices"]["pump1"]["poll_interval_s"] == 0.1  # type: ignore[index]


@async_test
async def test_unknown_node_is_reported_bad_and_others_still_flow(tmp_path: Path) -> None:
    """A browse path that matches nothing and an unknown node id read bad; the rest flows."""
    fields = (*PUMP_FIELDS[:1],
              FieldMap(key="0:Objects/2:Pump1/2:Nope", name="nope"),
              FieldMap(key="ns=2;s=Missing", name="missing"))  # fmt: skip
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path, [pump_device(pump_profile(fields))])
        async with running(source) as col:
            await wait_until(
                lambda: {"nope", "missing", "speed"} <= {r.point for r in col.readings}
            )
            status = source.status()
    bad = {r.point: r.reason for r in col.readings if r.quality is Quality.BAD}
    assert bad == {"nope": "BadNoMatch", "missing": "BadNodeIdUnknown"}
    devices: Any = status["devices"]
    assert sorted(devices["pump1"]["unresolved"]) == ["missing", "nope"]


@async_test
async def test_server_restart_restores_subscription(tmp_path: Path) -> None:
    """The server stopped and restarted on the same port: bad once, then values flow again."""
    peer = OpcUaPeer(free_port())
    async with serving(peer):
        source = make_source(peer.url, tmp_path)
        async with running(source) as col:
            await wait_until(lambda: 0.0 in values(col, "speed"))
            await peer.set("Speed", 1.0)
            await wait_until(lambda: 1.0 in values(col, "speed"))
            await peer.stop()
            await wait_until(lambda: "unreachable" in {r.reason for r in col.readings})
            await asyncio.sleep(0.8)  # several reconnect attempts while it is down
            await peer.start()
            await wait_until(lambda: source.connected, within_s=8)
            await peer.set("Speed", 2.0)
            await wait_until(lambda: 2.0 in values(col, "speed"))
            status = source.status()
    unreachable = [r for r in col.readings if r.reason == "unreachable"]
    assert sorted(r.point for r in unreachable) == sorted(p.name for p in PUMP_FIELDS)  # once
    assert status["sessions"] == 2 and status["mode"] == "subscribe"


@async_test
async def test_write_checks_range_and_reaches_the_server(tmp_path: Path) -> None:
    """write() sets a writable node; out of range, read-only and unknown points raise ValueError."""
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path)
        async with running(source):
            await wait_until(lambda: source.connected)
            await source.write("pump1", "setpoint", 75.5)
            assert await peer.get("Setpoint") == 75.5
            with pytest.raises(ValueError, match=r"outside its write range \[0, 100\]"):
                await source.write("pump1", "setpoint", 120)
            with pytest.raises(ValueError, match="read-only"):
                await source.write("pump1", "speed", 1)
            with pytest.raises(ValueError, match="no point"):
                await source.write("pump1", "nope", 1)
    assert await_count(source) == 1


def await_count(source: OpcUaSource) -> int:
    return source.counters["writes"]


@async_test
async def test_unreachable_server_reports_bad_once_and_keeps_trying(tmp_path: Path) -> None:
    """No server listening: points are reported unreachable once while it keeps retrying."""
    source = make_source(f"opc.tcp://127.0.0.1:{free_port()}/", tmp_path)
    async with running(source) as col:
        await wait_until(lambda: source.counters["transport_errors"] >= 3)
    reasons = [r.reason for r in col.readings]
    assert reasons == ["unreachable"] * len(PUMP_FIELDS)
    assert not source.connected


@async_test
async def test_clean_shutdown_leaves_nothing_running(tmp_path: Path) -> None:
    """Cancelling a subscribed source leaves no asyncua task or thread behind."""
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path)
        async with running(source) as col:
            await wait_until(lambda: 0.0 in values(col, "speed"))
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not left, left
    assert all(isinstance(r, Reading) for r in col.readings)


@async_test
async def test_published_server_status_profile_reads_from_a_real_server(tmp_path: Path) -> None:
    """The opcfoundation/server-status profile loads and every node reads from a real server."""
    profile = load_profile(Path(__file__).parent.parent / "firmware-profiles",
                           "opcfoundation/server-status")  # fmt: skip
    async with serving(OpcUaPeer(free_port())) as peer:
        source = make_source(peer.url, tmp_path, [pump_device(profile, "plc1")])
        async with running(source) as col:
            names = {f.name for f in profile.fields}
            await wait_until(lambda: names <= {r.point for r in col.readings})
    first = {r.point: r for r in reversed(col.readings)}
    assert (first["server_state"].value, first["server_state"].quality) == (0, Quality.GOOD)
    assert first["manufacturer"].value == "FreeOpcUa"
    assert first["service_level"].value == 255


@async_test
async def test_a_good_status_without_a_value_is_a_bad_reading_named_no_value(
    tmp_path: Path,
) -> None:
    """Server-status counters asyncua leaves empty (Good, null) are bad no_value, counted."""
    profile = load_profile(Path(__file__).parent.parent / "firmware-profiles",
                           "opcfoundation/server-status")  # fmt: skip
    dev = pump_device(profile, "plc1", poll_interval_s=0.05)
    async with serving(OpcUaPeer(free_port())) as peer:
        for mode, samples in (("subscribe", 1), ("poll", 3)):
            source = make_source(peer.url, tmp_path, [dev], mode=mode)
            with capture_logs() as logs:
                col, status, seen = await _run_until_sessions(source, samples)
            assert not [r for r in col.readings if r.value is None and r.quality != Quality.BAD]
            sessions = _of(col.readings, "current_sessions")
            assert {(r.quality, r.reason, r.code) for r in sessions} == {
                (Quality.BAD, "no_value", None)}  # fmt: skip
            assert status["errors"]["no_value"] >= seen * 5  # five empty counters each time
            assert status["last_error"].startswith("no_value: ")
            warned = [e["point"] for e in logs if e["event"] == "point_without_value"]
            assert warned.count("current_sessions") == 1  # once, not per sample
            assert _of(col.readings, "service_level")[-1].value == 255  # the others still flow


async def _run_until_sessions(source: OpcUaSource, samples: int) -> tuple[Any, Any, int]:
    """Run until ``samples`` current_sessions readings came: (collector, device status, seen)."""
    async with running(source) as col:
        await wait_until(lambda: len(_of(col.readings, "current_sessions")) >= samples)
        status = source.status()["devices"]["plc1"]  # type: ignore[index]
        return col, status, len(_of(col.readings, "current_sessions"))


def _of(readings: list[Reading], point: str) -> list[Reading]:
    return [r for r in readings if r.point == point]
