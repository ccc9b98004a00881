"""Metrics: exposition text from a status snapshot, scraped over HTTP, parsed strictly."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.lorawan.chirpstack import ChirpStackSource
from cityedge.drivers.modbus.scheduler import ModbusBus
from cityedge.metrics import CONTENT_TYPE, MAX_REQUEST, MetricsServer, parse_listen, render
from cityedge.profiles import FieldMap, Point
from cityedge.sim.lora_sim import encode_lpp
from tests.peers import serialpeer
from tests.peers.forwarder import APP, NWK, abp_device, lora_profile, rig
from tests.peers.modbus import Collector, async_test, device, make_profile, running, tcp_sim
from tests.test_serial_driver import sds_frame

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN"
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? ({VALUE})(?: -?\d+)?$")
SUFFIXES = {"summary": ("_sum", "_count", ""), "histogram": ("_bucket", "_sum", "_count")}


def strict_parse(text: str) -> dict[tuple[str, str], float]:
    """Check the 0.0.4 text format line by line; return {(sample name, labels): value}."""
    assert text.endswith("\n")
    samples: dict[tuple[str, str], float] = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    family: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if m := re.match(rf"^# HELP ({NAME}) (?:[^\\\n]|\\[\\n])*$", line):
            assert m.group(1) not in helps, f"line {n}: second HELP"
            helps.add(m.group(1))
            continue
        if m := re.match(rf"^# TYPE ({NAME}) (counter|gauge|summary|histogram|untyped)$", line):
            assert m.group(1) not in types, f"line {n}: second TYPE (family not contiguous)"
            family, types[m.group(1)] = m.group(1), m.group(2)
            continue
        assert not line.startswith("#"), f"line {n}: bad comment {line!r}"
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a sample: {line!r}"
        assert family is not None, f"line {n}: sample before any TYPE"
        name, labels = m.group(1), m.group(2) or ""
        allowed = {family + s for s in SUFFIXES.get(types[family], ("",))}
        assert name in allowed, f"line {n}: {name} outside its family {family}"
        assert (name, labels) not in samples, f"line {n}: duplicate series"
        samples[(name, labels)] = float(m.group(3))
    assert set(types) == helps, "every family has HELP and TYPE"
    return samples


SNAPSHOT: dict[str, Any] = {
    "gateway": 'gw "north"\\1\nx',
    "site": "berlin-mitte",
    "version": "0.1.0",
    "uptime_s": 3600.5,
    "clock": {"ok": False, "source": "none"},
    "writer": {"accepted": 1200, "refused": 0, "queued": 3, "waits": 5},
    "outbox": {
        "readings_waiting": 40,
        "bytes_waiting": 4096,
        "by_priority": {
            "alert": {"readings": 1, "bytes": 100},
            "event": {"readings": 0, "bytes": 0},
            "telemetry": {"readings": 39, "bytes": 3996},
        },
        "bound_bytes": 268435456,
        "counters": {"dropped_telemetry": 17, "rejected_disk_full": 2},
    },
    "uplink": {
        "state": "connected",
        "connects": 3,
        "reconnects": 2,
        "batches_published": 50,
        "batches_acked": 49,
        "batches_nacked": 0,
        "readings_acked": 1150,
    },
    "sources": {
        "modbus:field": {
            "bus": "field",
            "connected": True,
            "devices": {
                "meter-1": {
                    "polls": 100,
                    "errors": {"timeout": 3, "modbus_exception": 1},
                    "latency_mean_ms": 12.5,
                    "state": "ok",
                    "skipped_slots": 0,
                },
                "pump-2": {
                    "polls": 0,
                    "errors": {"timeout": 9},
                    "latency_mean_ms": None,
                    "state": "down",
                    "skipped_slots": 0,
                },
            },
        },
        "lorawan:lora": {
            "bus": "lora",
            "connected": True,
            "devices": {
                "lht-1": {"state": "unreachable"},  # every forwarder silent
                "lht-2": {"state": "waiting_join"},
            },
        },
    },
    "alerts": {"raised": {"blue": 4, "yellow": 1, "red": 0}, "active": {"yellow": 1}},
    "anomaly": {"scored": 5000, "anomalies": 7},
    "signer": {"latency_sum_s": 0.75, "latency_count": 50, "failures": 1},
}


def test_render_is_strict_text_format() -> None:
    """render() output passes the strict line checker and carries the snapshot's values."""
    s = strict_parse(render(SNAPSHOT))
    assert s[("cityedge_device_polls_total", 'bus="field",device="meter-1"')] == 100
    key = ("cityedge_device_errors_total", 'bus="field",device="meter-1",reason="timeout"')
    assert s[key] == 3
    assert s[("cityedge_device_up", 'bus="field",device="pump-2"')] == 0
    assert s[("cityedge_device_up", 'bus="lora",device="lht-1"')] == 0
    assert s[("cityedge_device_up", 'bus="lora",device="lht-2"')] == 1
    lat = 'bus="field",device="meter-1"'
    assert math.isclose(s[("cityedge_device_poll_latency_seconds_sum", lat)], 1.25)
    assert s[("cityedge_device_poll_latency_seconds_count", lat)] == 100
    assert s[("cityedge_outbox_dropped_total", 'class="telemetry"')] == 17
    assert s[("cityedge_outbox_dropped_total", 'class="alert"')] == 0
    assert s[("cityedge_outbox_bytes", 'class="telemetry"')] == 3996
    assert s[("cityedge_uplink_reconnects_total", "")] == 2
    assert s[("cityedge_uplink_connected", "")] == 1
    assert s[("cityedge_alerts_raised_total", 'level="blue"')] == 4
    assert s[("cityedge_anomalies_total", "")] == 7
    assert s[("cityedge_signer_latency_seconds_count", "")] == 50
    assert s[("cityedge_clock_synchronized", "")] == 0
    assert s[("cityedge_writer_waits_total", "")] == 5


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values are escaped, not emitted raw."""
    text = render(SNAPSHOT)
    assert 'gateway="gw \\"north\\"\\\\1\\nx"' in text
    assert len([ln for ln in text.splitlines() if ln.startswith("cityedge_info")]) == 1


def test_empty_snapshot_renders_only_what_exists() -> None:
    """A snapshot without sections exports no family for them, and no family without samples."""
    s = strict_parse(render({"version": "1"}))
    assert {name for name, _ in s} <= {
        "cityedge_info", "cityedge_outbox_dropped_total", "cityedge_outbox_rejected_disk_full_total"
    }  # fmt: skip


def test_prometheus_client_parses_it() -> None:
    """prometheus_client's own parser reads the text, label escapes included."""
    parser = pytest.importorskip("prometheus_client.parser")
    fams = {f.name: f for f in parser.text_string_to_metric_families(render(SNAPSHOT))}
    info = fams["cityedge_info"].samples[0]
    assert info.labels["gateway"] == SNAPSHOT["gateway"]
    assert fams["cityedge_device_poll_latency_seconds"].type == "summary"
    polls = {s.labels["device"]: s.value for s in fams["cityedge_device_polls"].samples}
    assert polls == {"meter-1": 100, "pump-2": 0}


def test_parse_listen() -> None:
    """listen = "HOST:PORT" for IPv4, [IPv6] and localhost; anything else says what is wrong."""
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("localhost:9108") == ("localhost", 9108)
    for bad in ("9108", "127.0.0.1:", "127.0.0.1:70000", "example.org:9108"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


PROFILE = make_profile([Point("voltage", "input", 0, "float32", unit="V")])


@async_test
async def test_scrape_a_polling_bus_over_http() -> None:
    """GET /metrics over HTTP renders a live bus's status; the body parses strictly."""
    async with tcp_sim({1: PROFILE}) as (_sim, bus):
        modbus = ModbusBus.from_config(
            bus, [device("m1", 1, PROFILE, poll_interval_s=0.05)], 52.5, 13.4, 500
        )
        sink = Collector()

        async def snapshot() -> dict[str, Any]:
            return {"version": "t", "sources": {modbus.name: modbus.status()}}

        async with running(modbus, sink), MetricsServer("127.0.0.1", 0, snapshot) as server:
            await sink.wait_for(lambda: len(sink.of("m1", True)) >= 3)
            status, headers, body = await http(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.0 200 OK"
    assert headers["Content-Type"] == CONTENT_TYPE
    assert int(headers["Content-Length"]) == len(body)
    s = strict_parse(body.decode())
    assert s[("cityedge_device_polls_total", 'bus="field",device="m1"')] >= 3
    assert s[("cityedge_bus_connected", 'bus="field"')] == 1
    assert s[("cityedge_device_poll_latency_seconds_sum", 'bus="field",device="m1"')] > 0


async def test_other_paths_methods_and_oversized_requests() -> None:
    """404 off /metrics, 405 for POST, 400 for a head over the bound; a failing snapshot is 500."""
    calls = 0

    def snapshot() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("boom")
        return SNAPSHOT

    async with MetricsServer("127.0.0.1", 0, snapshot) as server:
        assert (await http(server.port, b"GET / HTTP/1.0\r\n\r\n"))[0].endswith("404 Not Found")
        post = b"POST /metrics HTTP/1.0\r\n\r\n"
        assert (await http(server.port, post))[0].endswith("405 Method Not Allowed")
        huge = b"GET /metrics HTTP/1.0\r\nX: " + b"a" * MAX_REQUEST + b"\r\n\r\n"
        assert (await http(server.port, huge))[0].endswith("400 Bad Request")
        ok = await http(server.port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert ok[0].endswith("200 OK")
        assert (await http(server.port, b"GET /metrics HTTP/1.0\r\n\r\n"))[0].endswith(
            "500 Internal Server Error"
        )
        assert server.scrapes == 1


def series(s: dict[tuple[str, str], float], name: str, **labels: str) -> float | None:
    """The value of one series, labels given by keyword (None: not exported)."""
    key = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return s.get((name, key))


def device_errors(s: dict[tuple[str, str], float], bus: str, dev: str) -> dict[str, float]:
    """Every ``cityedge_device_errors_total`` series of one device, by reason."""
    prefix = f'bus="{bus}",device="{dev}",reason="'
    return {
        labels[len(prefix) : -1]: v
        for (name, labels), v in s.items()
        if name == "cityedge_device_errors_total" and labels.startswith(prefix)
    }


@async_test
async def test_exception_replies_show_as_errors_of_a_live_modbus_device() -> None:
    """A unit answering only exceptions: errors{reason="modbus_exception"} rises, up stays 1."""
    async with tcp_sim({1: PROFILE}) as (sim, bus):
        sim.fail(1, "input", 0, code=4)
        modbus = ModbusBus.from_config(
            bus, [device("m1", 1, PROFILE, poll_interval_s=0.05)], 52.5, 13.4, 500
        )
        sink = Collector()
        async with running(modbus, sink):
            await sink.wait_for(lambda: len(sink.of("m1", False)) >= 3)
        status = modbus.status()
    s = strict_parse(render({"sources": {modbus.name: status}}))
    errors = device_errors(s, "field", "m1")
    assert errors == {"modbus_exception": status["devices"]["m1"]["errors_total"]}  # type: ignore[index]
    assert errors["modbus_exception"] >= 3
    assert series(s, "cityedge_device_up", bus="field", device="m1") == 1
    assert series(s, "cityedge_device_polls_total", bus="field", device="m1") == 0


@async_test
async def test_lorawan_rejections_frames_and_device_errors(tmp_path: Path) -> None:
    """A real LoRaWAN source: bus rejections by reason, frames and errors per device."""
    climate = lora_profile("cayenne", [FieldMap("3.temperature", "temperature", unit="Cel")])
    lpp = encode_lpp([(3, "temperature", 20.0)])
    async with rig(tmp_path, [abp_device("climate-1", climate, "26011BDA")]) as r:
        for fcnt in (1, 2):
            r.gw.send_uplink("26011BDA", fcnt, 2, lpp, NWK, APP)
            await r.readings(fcnt)
        r.gw.send_uplink("26011BDA", 3, 2, lpp, bytes(16), APP)  # wrong NwkSKey
        await r.rejected("bad_mic")
        r.gw.send_raw(bytes((2, 0, 1, 0)) + bytes(8) + b'{"rxpk": [')
        await r.rejected("bad_json")
        r.gw.send_uplink("0BADBEEF", 1, 2, lpp, NWK, APP)
        await r.rejected("unknown_dev_addr")
        status = r.source.status()
    s = strict_parse(render({"sources": {r.source.name: status}}))
    rejected = {
        labels: v for (name, labels), v in s.items() if name == "cityedge_bus_rejected_total"
    }
    assert rejected == {
        f'bus="lora",reason="{reason}"': float(n)
        for reason, n in status["rejected"].items()  # type: ignore[attr-defined]
    }
    for reason in ("bad_mic", "bad_json", "unknown_dev_addr"):
        assert series(s, "cityedge_bus_rejected_total", bus="lora", reason=reason) == 1
    assert series(s, "cityedge_device_frames_total", bus="lora", device="climate-1") == 2
    assert device_errors(s, "lora", "climate-1") == {"bad_mic": 1}


def test_chirpstack_device_errors_and_frames() -> None:
    """A real ChirpStack source's events: frames, its errors (whatever the key), rejections."""
    bus = BusConfig(name="cs", type="chirpstack-mqtt", options={"broker": "127.0.0.1"})
    profile = lora_profile("cayenne", [FieldMap("temperature", "temperature", unit="Cel")])
    dev = DeviceConfig(id="cs-1", bus="cs", profile_name=profile.name, profile=profile,
                       options={"dev_eui": "0101010101010101"})  # fmt: skip
    source = ChirpStackSource(bus, [(dev, "cell-1")])
    event = {"deviceInfo": {"devEui": "0101010101010101"}, "fCnt": 4, "fPort": 1}
    for n in range(3):
        source.handle_event(json.dumps({**event, "object": {"temperature": 20 + n}}).encode())
    source.handle_event(json.dumps(event).encode())  # no decoded object: codec missing
    source.handle_event(b"{not json")
    status: Any = source.status()
    s = strict_parse(render({"sources": {source.name: status}}))
    assert series(s, "cityedge_device_frames_total", bus="cs", device="cs-1") == 3
    errors = device_errors(s, "cs", "cs-1")
    assert sum(errors.values()) == status["devices"]["cs-1"]["errors_total"] == 1
    assert series(s, "cityedge_bus_rejected_total", bus="cs", reason="no_object") == 1
    assert series(s, "cityedge_bus_rejected_total", bus="cs", reason="bad_json") == 1


async def test_serial_frames_and_rejections(tmp_path: Path) -> None:
    """A real serial sensor on a pty: frames per device, a bad checksum per bus and device."""
    async with serialpeer.sensor_port(tmp_path) as port:
        source = serialpeer.make_source(*serialpeer.sensor(port, "nova/sds011"))
        sink = serialpeer.Collector()
        async with serialpeer.running(source, sink):
            for pm in (10, 20):
                port.write(sds_frame(pm))
            port.write(sds_frame(30, bad_checksum=True) + sds_frame(40))
            await sink.wait_for(lambda: len(sink.values("pm2_5")) >= 3)
            status: Any = source.status()
    s = strict_parse(render({"sources": {source.name: status}}))
    assert series(s, "cityedge_device_frames_total", bus="uart1", device="s1") == 3
    (reason,) = status["rejected"]
    assert series(s, "cityedge_bus_rejected_total", bus="uart1", reason=reason) == 1
    assert sum(device_errors(s, "uart1", "s1").values()) == status["devices"]["s1"]["errors_total"]


def test_errors_kept_only_as_a_total_are_unclassified() -> None:
    """errors{} by reason when a source has them; the rest of errors_total as unclassified."""
    snap = {"sources": {"x:b": {"bus": "b", "devices": {
        "by-reason": {"errors": {"crc": 2}, "errors_total": 2},
        "total-only": {"errors_total": 5},
        "both": {"errors": {"crc": 1}, "errors_total": 4},
        "none": {"errors_total": 0},
    }}}}  # fmt: skip
    s = strict_parse(render(snap))
    assert device_errors(s, "b", "by-reason") == {"crc": 2}
    assert device_errors(s, "b", "total-only") == {"unclassified": 5}
    assert device_errors(s, "b", "both") == {"crc": 1, "unclassified": 3}
    assert device_errors(s, "b", "none") == {}
