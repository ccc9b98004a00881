"""Operations against a live agent: a full drill, metrics over HTTP, health, read, watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from cityedge.agent import Agent
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.control import request
from cityedge.drill import DrillRunner
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.agent import PROFILES, write_config
from tests.peers.mqtt import Broker, Recorder, free_port


async def wait(pred, within_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_drill_metrics_health_and_read_on_a_live_agent(
    tmp_path: Path, broker: Broker, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drill passes its steps; metrics parse; health goes out; read goes through the bus."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    sdm = load_profile(PROFILES, "eastron/sdm630")
    sim = ModbusSim({1: sdm, 2: sdm}, port=free_port())
    metrics_port = free_port()
    cfg = write_config(
        tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port, units=[1, 2],
        poll_s=0.2,
        extra=f'[signing]\nenabled = false\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
              "[health]\nevery_s = 10\n",
    )  # fmt: skip
    agent = Agent(load_config(cfg))
    sock = tmp_path / "control.sock"
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: len(recorder.readings()) > 0)
            # systemd: READY, then watchdog pings from the event loop.
            await asyncio.sleep(1.0)
            got = b""
            while True:
                try:
                    got += notify.recv(4096) + b"\n"
                except BlockingIOError:
                    break
            assert b"READY=1" in got and got.count(b"WATCHDOG=1") >= 2
            # SIGHUP (systemctl reload): RELOADING=1, then READY=1 once reloaded.
            os.kill(os.getpid(), signal.SIGHUP)
            got = b""
            for _ in range(50):
                await asyncio.sleep(0.1)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        got += notify.recv(4096) + b"\n"
                if b"READY=1" in got.partition(b"RELOADING=1")[2]:
                    break
            assert b"MONOTONIC_USEC=" in got.partition(b"RELOADING=1")[2], got
            assert b"READY=1" in got.partition(b"RELOADING=1")[2], got
            # Metrics over HTTP, in Prometheus text format.
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode()
            )
            from prometheus_client.parser import text_string_to_metric_families

            names = {f.name for f in text_string_to_metric_families(body)}
            assert any("outbox" in n for n in names) and any("poll" in n for n in names), names
            # A read through the bus's own scheduler.
            answer = await request(sock, "read", device="meter-1", points=["voltage_l1_n"])
            assert answer["ok"], answer
            assert [r["point"] for r in answer["readings"]] == ["voltage_l1_n"]
            answer = await request(sock, "read", device="meter-1", points=["voltage_l9"])
            assert not answer["ok"] and "meter-1 has no point 'voltage_l9'" in answer["error"]
            assert "voltage_l1_n" in answer["error"], answer  # what the profile has
            # The drill, against the live agent (no signer on this one: that step is skipped).
            runner = DrillRunner(sock, device="meter-2", cut_s=2.0, step_timeout_s=20.0,
                                 poll_s=0.2)  # fmt: skip
            before = (await agent.snapshot())["uplink"]
            report = await runner.run(("uplink_cut", "device_silent", "disk_nearly_full"))
            assert report.passed, report.render_text()
            # The uplink's counters are totals since start: the cut's new sender carries them on.
            after = (await agent.snapshot())["uplink"]
            assert after["connects"] > before["connects"]  # a fresh count would be 1 again
            assert after["readings_acked"] > before["readings_acked"]
            # The periodic health message went out on the events topic.
            await agent.ops.publish_health()
            await wait(lambda: any(e.get("type") == "health" for e in recorder.events()))
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
            notify.close()
