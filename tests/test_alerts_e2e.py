"""Threshold alerts through the whole agent: raised ahead of telemetry, acked from the cloud."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.readings import Priority
from cityedge.signing.algorithms import ED25519, SoftwareKey
from cityedge.signing.downlink import new_command, sign_command
from cityedge.sim.modbus_sim import ModbusSim
from cityedge.uplink.link import stop_loop
from tests.peers.mqtt import Broker, Recorder, free_port

PROFILE = """
[profile]
vendor = "Test"
model = "feeder"
family = "energy"
source = "test profile"

[[points]]
name = "voltage"
register = "input"
address = 0
type = "float32"
unit = "V"
alert = { above = { blue = 245, yellow = 250, red = 260 }, hysteresis = 2, clear_after = 2 }
"""


def config_text(tmp: Path, broker_port: int, modbus_port: int) -> str:
    return f"""
profiles_dir = "{tmp / "profiles"}"
[site]
id = "s"
gateway_id = "gw"
latitude = 52.5
longitude = 13.4
[buses.tcp]
type = "modbus-tcp"
port = {modbus_port}
timeout_s = 0.5
[uplink]
port = {broker_port}
batch_max_age_s = 0.1
[storage]
path = "{tmp / "outbox.sqlite"}"
[alerts]
resend_s = 1.0
[signing]
enabled = false
[downlink]
authority_keys = ["{AUTHORITY.public.to_text()}"]
[[devices]]
id = "feeder-1"
bus = "tcp"
unit_id = 1
profile = "test/feeder"
poll_interval_s = 0.1
"""


def words(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


async def wait(pred, within_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


AUTHORITY = SoftwareKey.generate(ED25519)


def send_command(port: int, topic: str, name: str, args: dict[str, object]) -> str:
    """Sign a command as the city's authority and publish it; returns its id (the nonce)."""
    cmd = new_command(name, args, "gw")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, sign_command(cmd, AUTHORITY), qos=1).wait_for_publish(5)
    c.disconnect()
    stop_loop(c)
    return cmd.nonce


def feeder_agent(tmp_path: Path, broker: Broker, volts: float) -> tuple[ModbusSim, Agent]:
    """A simulated feeder at ``volts`` (its profile alerts above 245 V) and an agent for it."""
    (tmp_path / "profiles" / "test").mkdir(parents=True)
    (tmp_path / "profiles" / "test" / "feeder.toml").write_text(PROFILE)
    profile = load_profile(tmp_path / "profiles", "test/feeder")
    sim = ModbusSim({1: profile}, port=free_port())
    sim.pin(1, "input", 0, words(volts))
    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(config_text(tmp_path, broker.port, sim.port))
    return sim, Agent(load_config(cfg_path))


async def test_threshold_alert_raised_acked_and_resent(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A voltage over the profile's limit raises an alert; unacked it is re-sent; acked it stops."""
    sim, agent = feeder_agent(tmp_path, broker, volts=230.0)
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: len(recorder.readings()) > 0)
            assert recorder.alerts() == []
            sim.pin(1, "input", 0, words(251.0))
            await wait(lambda: len(recorder.alerts()) >= 1)
            first = recorder.alerts()[0]
            assert (first["level"], first["transition"], first["device"]) == (
                "yellow", "raised", "feeder-1",
            )  # fmt: skip
            assert first["value"] == 251.0 and first["evidence"]["recent"]
            # Status (and so metrics and health) count it as active, by level.
            snap = await agent._status({})
            assert snap["alerts"]["active"] == {"blue": 0, "yellow": 1, "red": 0}
            # Unacknowledged: it comes again.
            await wait(lambda: any(a.get("resent") for a in recorder.alerts()), 10)
            # The cloud acknowledges it; the agent answers on the events topic.
            c1 = send_command(broker.port, "cityedge/s/gw/cmd", "ack_alert",
                              {"alert_id": first["alert_id"]})  # fmt: skip
            await wait(lambda: any(e.get("id") == c1 for e in recorder.events()))
            result = next(e for e in recorder.events() if e.get("id") == c1)
            assert result["ok"] is True
            # Bad commands are answered and counted, and the agent goes on.
            c2 = send_command(broker.port, "cityedge/s/gw/cmd", "reboot_city", {})
            await wait(lambda: any(e.get("id") == c2 for e in recorder.events()))
            bad = next(e for e in recorder.events() if e.get("id") == c2)
            assert bad["ok"] is False and "unknown command" in bad["error"]
            n_after_ack = len(recorder.alerts())
            await asyncio.sleep(2.5)
            assert len(recorder.alerts()) == n_after_ack, "no resend after the ack"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)


async def test_no_pile_of_resent_copies_while_the_broker_is_away(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """During an outage an unacknowledged alert waits in the outbox once, not once per period."""
    sim, agent = feeder_agent(tmp_path, broker, volts=251.0)
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: len(recorder.alerts()) >= 1)
            alert_id = recorder.alerts()[0]["alert_id"]
            broker.stop()
            waiting = []
            for _ in range(10):  # five resend periods (resend_s = 1.0)
                await asyncio.sleep(0.5)
                waiting.append(agent.outbox.count_by_prio[Priority.ALERT])
            assert max(waiting) <= 1, f"copies piled up in the outbox: {waiting}"
            before = len(recorder.alerts())
            broker.start()
            await wait(lambda: len(recorder.alerts()) > before, 15)
            await asyncio.sleep(0.3)  # what else arrives with it
            copies = [a for a in recorder.alerts()[before:] if a["alert_id"] == alert_id]
            # The copy that waited (a batch re-published after the outage may arrive twice),
            # and at most the next period's: not one per period of the outage.
            assert len({c["resent"] for c in copies}) <= 2 and copies[0]["resent"] >= 1, copies
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
