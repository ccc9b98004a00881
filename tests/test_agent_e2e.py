"""The whole path in one process: simulated meters -> Agent -> Mosquitto -> subscriber."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.grid import cell_id
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.agent import PROFILES, write_config
from tests.peers.mqtt import Broker, Recorder, free_port


def float_words(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


async def test_polled_values_reach_the_subscriber_right(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A pinned register value arrives at the hub with unit, family, cell and good quality."""
    sdm = load_profile(PROFILES, "eastron/sdm630")
    sim = ModbusSim({1: sdm, 2: sdm}, port=free_port())
    volt = sdm.point("voltage_l1_n")
    sim.pin(1, volt.register, volt.address, float_words(231.5))
    freq = sdm.point("frequency")
    sim.fail(2, freq.register, freq.address, code=2)
    config = load_config(
        write_config(
            tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port, units=[1, 2]
        )
    )
    agent = Agent(config)
    async with sim:
        task = asyncio.create_task(agent.run())
        deadline = time.monotonic() + 20
        got: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            got = recorder.readings()
            if any(r["device"] == "meter-2" for r in got) and any(
                r["device"] == "meter-1" and r["point"] == "voltage_l1_n" for r in got
            ):
                break
            await asyncio.sleep(0.05)
        agent.stop()
        await asyncio.wait_for(task, 20)
    v = next(r for r in got if r["device"] == "meter-1" and r["point"] == "voltage_l1_n")
    assert v["value"] == 231.5 and v["unit"] == "V" and v["quality"] == "good"
    assert v["family"] == "energy"
    assert v["cell"] == cell_id(52.5163, 13.3777, 500)
    assert str(v["ts"]).endswith("Z") and len(str(v["ts"])) == len("2026-11-25T12:00:00.000000Z")
    # The exception reply of meter-2 becomes bad readings with the code, not a crash.
    bad = [r for r in got if r["device"] == "meter-2" and r["quality"] == "bad"]
    assert bad and all(r["reason"] == "modbus_exception" and r["code"] == 2 for r in bad)
    assert any(r["device"] == "meter-2" and r["quality"] == "good" for r in got), (
        "the other requests of the same device still read"
    )
