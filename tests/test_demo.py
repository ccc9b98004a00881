"""`cityedge demo` in-process: every simulated device of every driver reaches the hub."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cityedge.config.loader import load_config
from cityedge.sim.demo import (
    BLE,
    LORA,
    MODBUS,
    DemoReport,
    Ports,
    _demo,
    profiles_dir,
    write_config,
)

FAULTS = ("tampered", "gap", "unknown_key", "malformed", "reordered", "topic_mismatch")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoReport, Path]:
    parent = tmp_path_factory.mktemp("demo")
    # As `bash dev.sh demo` runs it: a relative workdir (its default is
    # demo-state), so paths the agent reads from the config must resolve to
    # the ones the demo creates. A shortened drill: the broker is away from
    # 8 s to 11 s of a 20 s run.
    here = os.getcwd()
    os.chdir(parent)
    try:
        result = asyncio.run(
            _demo(Path("demo-state"), 20.0, outage_at_s=8.0, outage_for_s=3.0, show=False)
        )
    finally:
        os.chdir(here)
    return result, parent / "demo-state"


@pytest.mark.slow
def test_every_device_of_every_driver_reaches_the_hub(report: tuple[DemoReport, Path]) -> None:
    """Each configured device (Modbus, OPC UA, serial, LoRaWAN, BLE) has readings at the hub."""
    result, workdir = report
    config = load_config(workdir / "demo.toml")
    types = {config.buses[d.bus].type for d in config.devices}
    assert types == {"modbus-tcp", "opcua", "serial-sensor", "lorawan-udp", "ble"}
    assert len(config.devices) == len(MODBUS) + len(LORA) + len(BLE) + 3
    missing = [d.id for d in config.devices if result.per_device.get(d.id, 0) == 0]
    assert not missing, f"no readings at the hub from {missing}"
    assert result.delivered > 0.9 * result.accepted


@pytest.mark.slow
def test_nothing_errored(report: tuple[DemoReport, Path]) -> None:
    """No device error, no rejected input, no bad payload, every batch signed and in chain."""
    result, _ = report
    for name, status in result.statuses.items():
        assert status["connected"], name
        devices = status["devices"]
        assert isinstance(devices, dict)
        for dev_id, ds in devices.items():
            assert ds["errors_total"] == 0, (name, dev_id, ds)
            assert ds["state"] == "ok", (name, dev_id, ds)
        assert not status.get("rejected"), (name, status.get("rejected"))
    assert result.bad_payloads == 0
    assert result.verified > 0
    assert not {k: n for k, n in result.findings.items() if k in FAULTS}, result.findings


@pytest.mark.slow
def test_tank_level_alert_reaches_the_hub(report: tuple[DemoReport, Path]) -> None:
    """The pumping station's level crosses the profile's threshold: an alert at the hub."""
    result, _ = report
    assert result.alerts_at_hub >= 1


def test_a_relative_workdir_gives_the_agent_the_paths_the_demo_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bash dev.sh demo` passes the relative default demo-state: the signer socket,
    outbox and serial lines in the config must be the ones the demo creates, not
    demo-state/demo-state/... (the loader reads relative paths against the config's folder)."""
    monkeypatch.chdir(tmp_path)
    Path("demo-state").mkdir()
    config = load_config(write_config(Path("demo-state"), Ports(), profiles_dir()))
    here = tmp_path / "demo-state"
    assert config.signing.socket == here / "signer.sock"
    assert config.storage.path == here / "outbox.sqlite"
