"""`cityedge read` and `cityedge status` against a fake agent behind a real control socket."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityedge import cli_read, cli_status
from cityedge.cli import main, parser
from cityedge.control import ControlServer
from cityedge.drivers.modbus.scheduler import ModbusBus
from cityedge.profiles import Point
from cityedge.readings import Quality, Reading, utc_now
from tests.peers.modbus import Collector, async_test, device, make_profile, running, tcp_sim

DEVICES = {"meter-1": ("voltage_l1", "power_total"), "pump-2": ("speed",)}


class FakeReadAgent:
    """Answers `read` as the agent does: records of the readings its scheduler took."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def read(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(req)
        device = req["device"]
        if device not in DEVICES:
            raise KeyError(f"no device {device!r}; devices: {', '.join(sorted(DEVICES))}")
        points = req["points"] or list(DEVICES[device])
        now = utc_now()
        out = []
        for point in points:
            if point not in DEVICES[device]:
                raise KeyError(f"{device} has no point {point!r}; points: {DEVICES[device]}")
            if point == "power_total":
                out.append(Reading(device, point, None, "W", now, Quality.BAD,
                                   reason="modbus_exception", code=2))  # fmt: skip
            else:
                out.append(Reading(device, point, 230.1, "V", now, time_ok=False))
        return {"device": device, "readings": [r.to_record() for r in out]}


@contextlib.asynccontextmanager
async def control(handlers: dict[str, Any]) -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ce-") as d:
        server = ControlServer(Path(d) / "control.sock", handlers)
        await server.start()
        try:
            yield server.path
        finally:
            await server.close()


async def test_read_points_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """`read meter-1 voltage_l1`: one table row with value, unit, quality, ts; exit 0."""
    agent = FakeReadAgent()
    async with control({"read": agent.read}) as sock:
        argv = ["read", "meter-1", "voltage_l1", "--socket", str(sock)]
        code = await cli_read.run_async(parser().parse_args(argv))
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert agent.requests == [{"cmd": "read", "device": "meter-1", "points": ["voltage_l1"]}]
    assert lines[0] == "meter-1"
    assert lines[1].split() == ["point", "value", "unit", "quality", "ts"]
    row = lines[2].split()
    assert row[:4] == ["voltage_l1", "230.1", "V", "good"]
    assert row[4].endswith("Z") and "(clock not synced)" in lines[2]


async def test_read_all_points_bad_one_exit_1_json(capsys: pytest.CaptureFixture[str]) -> None:
    """All points, one of them bad: exit 1; --json carries the records with reason and code."""
    agent = FakeReadAgent()
    async with control({"read": agent.read}) as sock:
        argv = ["read", "meter-1", "--socket", str(sock), "--json"]
        code = await cli_read.run_async(parser().parse_args(argv))
        text_argv = ["read", "meter-1", "--socket", str(sock)]
        await cli_read.run_async(parser().parse_args(text_argv))
    doc = json.loads(capsys.readouterr().out.split("\nmeter-1\n")[0])
    assert code == 1
    assert agent.requests[0]["points"] == []
    bad = next(r for r in doc["readings"] if r["point"] == "power_total")
    assert (bad["quality"], bad["reason"], bad["code"]) == ("bad", "modbus_exception", 2)


async def test_read_bad_quality_shows_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad reading's quality column says why (reason, code)."""
    agent = FakeReadAgent()
    async with control({"read": agent.read}) as sock:
        argv = ["read", "meter-1", "power_total", "--socket", str(sock)]
        assert await cli_read.run_async(parser().parse_args(argv)) == 1
    assert "bad (modbus_exception, 2)" in capsys.readouterr().out


async def test_read_unknown_device_says_which_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown device: exit 1 with the agent's answer naming the devices."""
    agent = FakeReadAgent()
    async with control({"read": agent.read}) as sock:
        argv = ["read", "meter-9", "--socket", str(sock)]
        assert await cli_read.run_async(parser().parse_args(argv)) == 1
    err = capsys.readouterr().err
    assert err.startswith("cityedge read: ") and "meter-1, pump-2" in err


async def test_read_on_an_agent_without_read(capsys: pytest.CaptureFixture[str]) -> None:
    """An older agent that lacks `read`: exit 1, saying the agent does not know the command."""

    async def status(_req: dict[str, Any]) -> dict[str, Any]:
        return {}

    async with control({"status": status}) as sock:
        argv = ["read", "meter-1", "--socket", str(sock)]
        assert await cli_read.run_async(parser().parse_args(argv)) == 1
    assert "does not know the command 'read'" in capsys.readouterr().err


def test_no_agent_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No socket: exit 1, saying no agent answers and how to check."""
    assert main(["read", "meter-1", "--socket", str(tmp_path / "x.sock")]) == 1
    err = capsys.readouterr().err
    assert "no agent answers" in err and "systemctl status cityedge" in err


STATUS: dict[str, Any] = {
    "gateway": "gw-17",
    "site": "mitte",
    "version": "0.3.0",
    "uptime_s": 93784.2,
    "outbox": {"readings_waiting": 120, "bytes_waiting": 6000, "bound_bytes": 60000,
               "counters": {"dropped_telemetry": 3, "dropped_alert": 0, "cut": 9}},
    "uplink": {"state": "connected", "batches_acked": 40, "readings_acked": 4000,
               "reconnects": 1, "backlog_batches": 2, "last_error": None},
    "clock": {"ok": False, "source": None, "kernel": None, "timesyncd": False,
              "gps": {"offset_s": 3600.2, "age_s": 1.0, "agrees": False}, "steps": 2,
              "last_step_s": 3600.0},
    "alerts": {"active": 1, "raised": {"blue": 0, "yellow": 2, "red": 1}, "unacknowledged": 1},
    "reload": {"ok": False, "reason": "sighup", "at": 1735689600.0,
               "problems": ["gw.toml:4: buses.x.baudrate: must be one of 9600, 19200"]},
    "signer": {"state": "ok", "latency_sum_s": 0.5, "latency_count": 1000, "failures": 0},
    "anomaly": {"scored": 500, "anomalies": 3, "models": {"block_novelty": "1.2"}},
    "sources": {
        "rs485": {"bus": "rs485", "type": "modbus-rtu", "connected": True, "devices": {
            "meter-1": {"state": "ok", "polls": 1200, "errors_total": 1, "poll_rate_hz": 1.0,
                        "last_poll": "2025-01-01T00:00:00.000000Z", "unit_id": 3,
                        "last_error": "timeout: no reply"}}},
        "plc": {"bus": "plc", "type": "opcua", "connected": True, "endpoint": "opc.tcp://plc:4840/",
                "security": "Basic256Sha256/SignAndEncrypt", "mode": "subscription",
                "queued": 0, "rejected": {}, "devices": {
                    "pump1": {"state": "ok", "frames": 50, "polls": 0, "errors_total": 0,
                              "last_value": "2025-01-01T00:00:01.000000Z", "points": 6,
                              "unresolved": ["sensor"], "last_error": None}}},
        "lora": {"bus": "lora", "type": "lorawan-udp", "connected": True,
                 "rejected": {"bad_mic": 4},
                 "devices": {"climate-1": {"state": "ok", "frames": 7, "errors_total": 0,
                                           "fcnt_up": 7, "last_rssi": -97, "last_snr": 7.5}}},
        "cs": {"bus": "cs", "type": "chirpstack-mqtt", "connected": False, "rejected": {},
               "devices": {"tracker": {"state": "waiting", "frames": 0, "errors_total": 0,
                                       "last_seen": 1735689600.0}}},
        "ble": {"bus": "ble", "type": "ble", "connected": True, "adapter": "hci0",
                "scan_mode_in_use": "passive", "rejected": {"unknown_mac": 20}, "devices": {
                    "ruuvi-1": {"state": "ok", "frames": 30, "errors_total": 0, "rssi": -70,
                                "codec": "ruuvi", "last_seen": "2025-01-01T00:00:02+00:00"}}},
        "air": {"bus": "air", "type": "serial", "connected": True, "port": "/dev/ttyAMA0",
                "rejected": {"bad_checksum": 1}, "devices": {
                    "pm-1": {"state": "ok", "frames": 99, "errors_total": 1, "codec": "pms5003",
                             "last_frame": "2025-01-01T00:00:03.000000Z",
                             "last_error": "bad_checksum"}}},
    },
}  # fmt: skip


async def test_status_shows_every_section_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    """status renders clock, uplink, outbox, signer, alerts, reload, anomaly and each bus type."""

    async def status(_req: dict[str, Any]) -> dict[str, Any]:
        return STATUS

    async with control({"status": status}) as sock:
        code = await cli_status.run_async(parser().parse_args(["status", "--socket", str(sock)]))
        text = capsys.readouterr().out
        args = parser().parse_args(["status", "--socket", str(sock), "--json"])
        assert await cli_status.run_async(args) == 0
        doc = json.loads(capsys.readouterr().out)
    assert code == 0
    lines = {line.split()[0]: line for line in text.splitlines() if not line.startswith(" ")}
    assert "up 1d 2h 3m 4s" in lines["gateway"]
    assert "NOT synchronised" in lines["clock"] and "GPS disagrees by 3600.2 s" in lines["clock"]
    assert "(10 %)" in lines["outbox"] and "dropped: telemetry 3" in lines["outbox"]
    assert "backlog 2 batches" in lines["uplink"]
    assert "mean latency 0.50 ms" in lines["signer"]
    assert "raised red 1, yellow 2" in lines["alerts"] and "unacknowledged 1" in lines["alerts"]
    assert "FAILED at 2025-01-01T00:00:00Z (sighup): 1 problem(s), first: gw.toml:4" in text
    assert "models block_novelty 1.2" in lines["anomaly"]
    for bus, kind in [("rs485", "modbus-rtu"), ("plc", "opcua"), ("lora", "lorawan-udp"),
                      ("cs", "chirpstack-mqtt"), ("ble", "ble"), ("air", "serial")]:  # fmt: skip
        assert f"bus {bus}  {kind}" in text
    assert "bus cs  chirpstack-mqtt  NOT CONNECTED" in text
    device = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "polls    1200" in device["meter-1"] and "unit 3" in device["meter-1"]
    assert "last error: timeout: no reply" in device["meter-1"]
    assert "unresolved sensor" in device["pump1"] and "frames     50" in device["pump1"]
    assert "rssi -97" in device["climate-1"] and "fcnt 7" in device["climate-1"]
    assert "last 2025-01-01T00:00:00Z" in device["tracker"]
    assert "rejected: unknown_mac 20" in text and "port /dev/ttyAMA0" in text
    assert doc["gateway"] == "gw-17" and doc["ok"] is True


async def test_status_of_a_minimal_agent(capsys: pytest.CaptureFixture[str]) -> None:
    """Sections the agent does not report are left out, nothing fails."""

    async def status(_req: dict[str, Any]) -> dict[str, Any]:
        return {"gateway": "gw-1", "site": "s", "uptime_s": 5}

    async with control({"status": status}) as sock:
        code = await cli_status.run_async(parser().parse_args(["status", "--socket", str(sock)]))
    assert code == 0
    assert capsys.readouterr().out.splitlines() == ["gateway gw-1  site s  cityedge ?  up 0m 5s"]


def test_status_says_signing_is_off() -> None:
    """[signing] enabled = false (signer null in the status): "off", not "None"."""
    text = cli_status.render_status({"gateway": "gw-1", "signer": None})
    assert text.splitlines()[1] == "signer   off (signing disabled: batches go out unsigned)"


def test_no_rate_for_a_device_reported_down() -> None:
    """A device a drill silenced is down in the status though polled: no rate is shown."""
    silenced = {"state": "down", "polls": 10, "poll_rate_hz": 1.0, "last_error": "drill: silenced"}
    text = cli_status.render_status({"sources": {"m": {"devices": {"m1": silenced}}}})
    assert "rate" not in text.splitlines()[-1] and "down" in text.splitlines()[-1]


METER = make_profile([Point("voltage", "input", 0, "float32", unit="V")])


@async_test
async def test_status_of_a_refusing_and_a_dead_modbus_device() -> None:
    """Real bus status: exceptions show as state exception with errors; a dead one has no rate."""
    async with tcp_sim({1: METER, 2: METER}) as (sim, bus):
        devs = [device(f"m{u}", u, METER, poll_interval_s=0.05, timeout_s=0.1, retries=0,
                       backoff_max_s=0.2) for u in (1, 2)]  # fmt: skip
        modbus = ModbusBus.from_config(bus, devs, 52.5, 13.4, 500)
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m2", True)) >= 3)  # a rate to forget
            sim.fail(1, "input", 0, code=11)
            sim.silent.add(2)
            await sink.wait_for(lambda: len(sink.of("m1", False)) >= 2)
            await sink.wait_for(lambda: len(sink.of("m2", False)) >= 1)
            status: Any = modbus.status()
    text = cli_status.render_status({"gateway": "gw-1", "sources": {modbus.name: status}})
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert lines["m1"].split()[1] == "exception"
    assert f"errors {status['devices']['m1']['errors_total']:>5}" in lines["m1"]
    assert "last error: modbus_exception: exception 11 (gateway target device" in lines["m1"]
    assert lines["m2"].split()[1] == "down" and "rate" not in lines["m2"]
    assert "last error: timeout" in lines["m2"]


async def test_read_of_a_device_that_only_sends_gives_its_last_values(tmp_path: Path) -> None:
    """A serial sensor is not read on demand: `read` answers with what it last sent."""
    from datetime import UTC, datetime

    from cityedge.agent import LAST_VALUES_PER_DEVICE, Agent
    from cityedge.config.loader import load_config

    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        '[site]\nid = "s"\ngateway_id = "gw"\nlatitude = 52.5\nlongitude = 13.4\n'
        f'[storage]\npath = "{tmp_path / "outbox.sqlite"}"\n[signing]\nenabled = false\n'
        '[buses.uart]\ntype = "serial-sensor"\ndevice = "/dev/ttyUSB9"\n'
        '[[devices]]\nid = "air-1"\nbus = "uart"\nprofile = "plantower/pms5003"\n'
    )
    agent = Agent(load_config(cfg))
    try:
        answer = await agent._control_read({"device": "air-1"})
        assert answer["readings"] == [] and answer["last_received"] is True
        assert "not read on demand" in answer["note"]
        ts = datetime(2026, 12, 7, 12, tzinfo=UTC)
        await agent.sink([Reading("air-1", "pm2_5", 12.0, "ug/m3", ts, family="environment")])
        await agent.sink([Reading("air-1", "pm2_5", 14.0, "ug/m3", ts, family="environment")])
        answer = await agent._control_read({"device": "air-1", "points": ["pm2_5"]})
        assert [(r["point"], r["value"]) for r in answer["readings"]] == [("pm2_5", 14.0)]
        with pytest.raises(ValueError, match="has no point 'pm25'"):
            await agent._control_read({"device": "air-1", "points": ["pm25"]})
        # Whatever a device sends, the cache holds a bounded number of points.
        flood = [Reading("air-1", f"p{i}", 1.0, "", ts) for i in range(LAST_VALUES_PER_DEVICE + 50)]
        await agent.sink(flood)
        assert len(agent.last_values["air-1"]) == LAST_VALUES_PER_DEVICE
    finally:
        agent.outbox.close()
        agent.executor.shutdown(wait=True)
        agent.alert_store.close()
