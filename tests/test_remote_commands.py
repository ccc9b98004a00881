"""Remote commands over the signed downlink: write a point, reload the config, republish."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.signing.algorithms import ED25519, SoftwareKey
from cityedge.signing.downlink import new_command, sign_command
from cityedge.sim.modbus_sim import ModbusSim
from cityedge.uplink.link import stop_loop
from tests.peers.agent import PROFILES, write_config
from tests.peers.mqtt import Broker, Recorder, free_port

AUTHORITY = SoftwareKey.generate(ED25519)
CMD = "cityedge/test-site/gw-test/cmd"


async def wait(pred, within_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def send(port: int, name: str, args: dict[str, Any]) -> str:
    cmd = new_command(name, args, "gw-test")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hub", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(CMD, sign_command(cmd, AUTHORITY), qos=1).wait_for_publish(5)
    c.disconnect()
    stop_loop(c)
    return cmd.nonce


def result(rec: Recorder, cid: str) -> dict[str, Any] | None:
    return next((e for e in rec.events() if e.get("id") == cid), None)


async def test_write_reload_and_republish(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A signed write lands in the device; a bad config is refused and a good one applied."""
    sdm = load_profile(PROFILES, "eastron/sdm630")
    sim = ModbusSim({1: sdm, 2: sdm}, port=free_port())
    key = AUTHORITY.public.to_text()
    extra = f'[signing]\nenabled = false\n[downlink]\nauthority_keys = ["{key}"]\n'
    cfg = write_config(tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port,
                       units=[1], extra=extra)  # fmt: skip
    agent = Agent(load_config(cfg))
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: len(recorder.readings()) > 0)
            # Write a holding register through the bus queue; read it back the same way.
            c1 = send(broker.port, "write_point",
                      {"device": "meter-1", "point": "demand_period", "value": 15})  # fmt: skip
            await wait(lambda: result(recorder, c1) is not None)
            assert result(recorder, c1)["ok"], result(recorder, c1)  # type: ignore[index]
            src = agent._running["tcp"][0]
            back = await src.read_now("meter-1", ["demand_period"])  # type: ignore[attr-defined]
            assert back[0].value == 15.0
            # A config with a mistake: refused with the problem, the old one keeps running.
            bad = cfg.read_text().replace("unit_id = 1", 'unit_id = "one"')
            c2 = send(broker.port, "reload_config", {"toml": bad})
            await wait(lambda: result(recorder, c2) is not None)
            r2 = result(recorder, c2)
            assert r2 is not None and not r2["ok"] and "devices[0].unit_id" in r2["error"]
            assert "unit_id = 1" in cfg.read_text(), "the file on disk is untouched"
            # A good one: applied, the new device polled.
            new = write_config(tmp_path / "new.toml", broker_port=broker.port,
                               modbus_port=sim.port, units=[1, 2], extra=extra)  # fmt: skip
            good = new.read_text()
            c3 = send(broker.port, "reload_config", {"toml": good})
            await wait(lambda: result(recorder, c3) is not None)
            assert result(recorder, c3)["ok"]  # type: ignore[index]
            await wait(lambda: any(r["device"] == "meter-2" for r in recorder.readings()))
            c4 = send(broker.port, "republish", {})
            await wait(lambda: result(recorder, c4) is not None)
            assert result(recorder, c4)["ok"]  # type: ignore[index]
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)


async def test_profile_update_is_validated_then_applied(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A broken profile update is refused; a good one is installed and its devices restart."""
    sdm = load_profile(PROFILES, "eastron/sdm630")
    sim = ModbusSim({1: sdm}, port=free_port())
    key = AUTHORITY.public.to_text()
    extra = f'[signing]\nenabled = false\n[downlink]\nauthority_keys = ["{key}"]\n'
    cfg = write_config(tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port,
                       units=[1], extra=extra)  # fmt: skip
    agent = Agent(load_config(cfg))
    shipped = (PROFILES / "eastron" / "sdm630.toml").read_text()
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: len(recorder.readings()) > 0)
            broken = shipped.replace('type = "float32"', 'type = "float33"', 1)
            c1 = send(broker.port, "install_profile", {"name": "eastron/sdm630", "toml": broken})
            await wait(lambda: result(recorder, c1) is not None)
            r1 = result(recorder, c1)
            assert r1 is not None and not r1["ok"] and "float33" in r1["error"]
            # A good update: the frequency point gets an alert rule the shipped profile lacks.
            renamed = shipped.replace(
                'unit = "Hz"', 'unit = "Hz"\nalert = { above = { red = 99 } }', 1
            )
            c2 = send(broker.port, "install_profile", {"name": "eastron/sdm630", "toml": renamed})
            await wait(lambda: result(recorder, c2) is not None)
            r2 = result(recorder, c2)
            assert r2 is not None and r2["ok"], r2
            assert (tmp_path / "profiles" / "eastron" / "sdm630.toml").is_file()
            assert agent.config.devices[0].profile.point("frequency").alert is not None
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
