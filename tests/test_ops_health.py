"""The health message: devices, completeness, alerts, outbox, clock and versions per period."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cityedge.alerting import AlertEngine
from cityedge.anomaly_runtime import AnomalyRuntime
from cityedge.config.loader import load_config
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.lorawan.chirpstack import ChirpStackSource
from cityedge.health import SCHEMA, build_health
from cityedge.profiles import FieldMap
from tests.peers.agent import PROFILES
from tests.peers.forwarder import lora_profile


def snapshot(uptime_s: float, polls: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """A status snapshot with two 10 s devices on one bus (pump-2 down) and one push device.

    Shaped like the agent's status answer: the loaded models are in ``anomaly``.
    """
    snap: dict[str, Any] = {
        "gateway": "gw-1",
        "site": "mitte",
        "version": "0.3.0",
        "uptime_s": uptime_s,
        "anomaly": {"scored": 0, "anomalies": 0, "models": {"window_novelty": "2024.1"}},
        "clock": {"ok": True, "source": "kernel"},
        "sources": {
            "modbus:field": {
                "devices": {
                    "meter-1": {"polls": polls[0], "poll_interval_s": 10, "state": "ok"},
                    "pump-2": {"polls": polls[1], "poll_interval_s": 10, "state": "down"},
                }
            },
            "ble:yard": {"devices": {"tag-9": {"state": "ok", "frames": 3, "errors_total": 0}}},
        },
        "outbox": {
            "readings_waiting": 12,
            "bytes_waiting": 900,
            "bound_bytes": 1 << 20,
            "counters": {"dropped_telemetry": 5},
        },
        "uplink": {
            "state": "connected",
            "reconnects": 1,
            "batches_acked": 10,
            "readings_acked": 100,
        },
        "alerts": {"raised": {"blue": 2, "red": 1}, "active": {"red": 1}},
    }
    snap.update(extra)
    return snap


def test_first_message_counts_since_start() -> None:
    """Without a previous snapshot the period is the uptime."""
    h = build_health(snapshot(600, (60, 30)), now=datetime(2025, 1, 1, tzinfo=UTC))
    assert h["kind"] == "health" and h["schema"] == SCHEMA
    assert h["ts"] == "2025-01-01T00:00:00.000000Z"
    assert h["period_s"] == 600
    assert h["devices"] == {"total": 3, "healthy": 2, "down": ["pump-2"]}
    c = h["completeness"]["devices"]
    assert c["meter-1"] == {"received": 60, "expected": 60, "ratio": 1.0}
    assert c["pump-2"] == {"received": 30, "expected": 60, "ratio": 0.5}
    assert c["tag-9"] == {"received": 3, "expected": None, "ratio": None}
    assert h["completeness"]["overall"] == 0.75
    assert h["alerts"] == {"active": {"blue": 0, "yellow": 0, "red": 1},
                           "raised": {"blue": 2, "yellow": 0, "red": 1}}  # fmt: skip
    assert h["outbox"]["dropped"] == {"alert": 0, "event": 0, "telemetry": 5}
    assert h["software"] == {"version": "0.3.0"} and h["models"] == {"window_novelty": "2024.1"}
    assert h["clock"] == {"ok": True, "source": "kernel"}
    json.dumps(h)  # ready to publish


def test_period_deltas_from_previous_snapshot() -> None:
    """With a previous snapshot, counts are the differences over the period."""
    before = snapshot(600, (60, 30))
    after = snapshot(1200, (120, 30))
    after["alerts"] = {"raised": {"blue": 3, "red": 1}, "active": {}}
    after["outbox"]["counters"] = {"dropped_telemetry": 9, "dropped_event": 1}
    after["uplink"]["reconnects"] = 4
    h = build_health(after, before)
    assert h["period_s"] == 600
    assert h["completeness"]["devices"]["meter-1"]["ratio"] == 1.0
    assert h["completeness"]["devices"]["pump-2"] == {"received": 0, "expected": 60, "ratio": 0.0}
    assert h["alerts"]["raised"] == {"blue": 1, "yellow": 0, "red": 0}
    assert h["outbox"]["dropped"] == {"alert": 0, "event": 1, "telemetry": 4}
    assert h["uplink"]["reconnects"] == 3


def test_restart_between_snapshots_and_new_devices() -> None:
    """A lower uptime than before means a restart: count from start; new devices from zero."""
    before = snapshot(5000, (500, 400))
    after = snapshot(100, (10, 0))
    after["sources"]["modbus:field"]["devices"]["new-3"] = {"polls": 5, "poll_interval_s": 10}
    h = build_health(after, before)
    assert h["period_s"] == 100
    assert h["completeness"]["devices"]["meter-1"]["ratio"] == 1.0
    assert h["completeness"]["devices"]["new-3"] == {"received": 5, "expected": 10, "ratio": 0.5}


def test_pure_and_tolerant() -> None:
    """The snapshot is not modified; an empty one still gives a well-formed message."""
    snap = snapshot(60, (6, 6))
    kept = copy.deepcopy(snap)
    build_health(snap)
    assert snap == kept
    h = build_health({})
    assert h["devices"] == {"total": 0, "healthy": 0, "down": []}
    assert h["completeness"] == {"overall": None, "devices": {}}
    assert "ts" not in h


def test_push_devices_count_their_frames() -> None:
    """A ChirpStack device's frames (its real status) are what it received in the period."""
    bus = BusConfig(name="cs", type="chirpstack-mqtt", options={"broker": "127.0.0.1"})
    profile = lora_profile("cayenne", [FieldMap("temperature", "temperature", unit="Cel")])
    dev = DeviceConfig(id="cs-1", bus="cs", profile_name=profile.name, profile=profile,
                       options={"dev_eui": "0101010101010101"})  # fmt: skip
    source = ChirpStackSource(bus, [(dev, "cell-1")])

    def uplinks(n: int) -> dict[str, Any]:
        for _ in range(n):
            event = {"deviceInfo": {"devEui": "0101010101010101"}, "object": {"temperature": 20}}
            source.handle_event(json.dumps(event).encode())
        return {"uptime_s": 600.0, "sources": {source.name: copy.deepcopy(source.status())}}

    before = uplinks(2)
    after = uplinks(5)
    after["uptime_s"] = 1200.0
    h = build_health(after, before)
    assert h["completeness"]["devices"]["cs-1"] == {"received": 5, "expected": None, "ratio": None}
    assert build_health(before)["completeness"]["devices"]["cs-1"]["received"] == 2


def test_an_opcua_device_counts_polls_while_polled_and_frames_when_subscribed() -> None:
    """poll_interval_s in a device's status makes it polled; without it, frames count."""
    polled = {"state": "ok", "polls": 60, "frames": 0, "poll_interval_s": 10}
    subscribed = {"state": "ok", "polls": 0, "frames": 240}
    snap = {"uptime_s": 600, "sources": {"opcua:plc": {"devices": {
        "pump-1": polled, "pump-2": subscribed}}}}  # fmt: skip
    c = build_health(snap)["completeness"]["devices"]
    assert c["pump-1"] == {"received": 60, "expected": 60, "ratio": 1.0}
    assert c["pump-2"] == {"received": 240, "expected": None, "ratio": None}


def test_every_driver_word_for_down_counts_as_down() -> None:
    """LoRaWAN unreachable, serial silent, BLE no_adapter are down like Modbus down."""
    states = {"a": "down", "b": "unreachable", "c": "silent", "d": "no_adapter", "e": "ok",
              "f": "exception", "g": "waiting_join"}  # fmt: skip
    snap = {"sources": {"x:y": {"devices": {d: {"state": st} for d, st in states.items()}}}}
    assert build_health(snap)["devices"] == {
        "total": 7, "healthy": 3, "down": ["a", "b", "c", "d"]}  # fmt: skip


WATCHING = f"""
profiles_dir = "{PROFILES}"
[site]
id = "s"
gateway_id = "gw"
latitude = 52.5
longitude = 13.4
[buses.tcp]
type = "modbus-tcp"
[[devices]]
id = "pump-1"
bus = "tcp"
unit_id = 1
profile = "eastron/sdm630"
[anomaly]
watch = [{{device = "pump-1", point = "current_l1", model = "window_novelty"}}]
"""


async def _no_alerts(records: list[dict[str, Any]]) -> None:
    raise AssertionError(records)


def test_models_are_those_the_anomaly_runtime_reports(tmp_path: Path) -> None:
    """The message names the models of the anomaly section, as the agent's status nests them."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(WATCHING)
    runtime = AnomalyRuntime(load_config(cfg), tmp_path, AlertEngine({}, "gw"), _no_alerts)
    snap = snapshot(600, (60, 60))
    del snap["anomaly"]
    assert build_health(snap)["models"] == {}
    snap["anomaly"] = runtime.status()
    models = build_health(snap)["models"]
    assert models == runtime.engine.models() and list(models) == ["window_novelty"]
