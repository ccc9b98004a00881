"""Reload: a broken config keeps the old one running; a good one starts new devices."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from cityedge.agent import Agent, _stamp
from cityedge.config.loader import load_config
from cityedge.config.profile_loader import load_profile
from cityedge.control import request
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.agent import PROFILES, SimProcess, start_agent, wait_until, write_config
from tests.peers.mqtt import Broker, Recorder, free_port


async def wait(pred, within_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def meter_agent(
    tmp_path: Path, broker: Broker, units: tuple[int, ...]
) -> tuple[ModbusSim, Path, Agent]:
    """Simulated SDM630 meters at ``units``, and an agent configured for meter 1 only."""
    sdm = load_profile(PROFILES, "eastron/sdm630")
    sim = ModbusSim(dict.fromkeys(units, sdm), port=free_port())
    cfg = write_config(tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port,
                       units=[1])  # fmt: skip
    return sim, cfg, Agent(load_config(cfg))


async def test_reload_keeps_old_config_on_error_and_adds_devices(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """Broken config: refused with reasons, old devices go on; fixed: the new device starts."""
    sim, cfg, agent = meter_agent(tmp_path, broker, units=(1, 2))
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: any(r["device"] == "meter-1" for r in recorder.readings()))
            good = cfg.read_text()
            cfg.write_text(good.replace('bus = "tcp"', 'bus = "nope"'))
            result = await agent.reload("test")
            assert result["ok"] is False
            assert any("devices[0].bus" in p for p in result["problems"])
            n = len(recorder.readings())
            await wait(lambda: len(recorder.readings()) > n + 50)  # still polling meter-1
            write_config(cfg, broker_port=broker.port, modbus_port=sim.port, units=[1, 2])
            result = await agent.reload("test")
            assert result["ok"] is True and result["buses_restarted"] == ["tcp"]
            await wait(lambda: any(r["device"] == "meter-2" for r in recorder.readings()))
            assert len(agent.sources) == 1 and len(agent._running) == 1, "the old bus stopped"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
    # Nothing buffered was lost across the reloads: seqs are contiguous.
    seqs = sorted({int(r["seq"]) for r in recorder.wait_for(1)})
    assert seqs == list(range(1, seqs[-1] + 1))


def test_sighup_on_a_running_process(tmp_path: Path, broker: Broker) -> None:
    """SIGHUP with a broken config: still running, status says why; fixed: reloaded."""
    sim = SimProcess(units=[1, 2])
    sim.start()
    cfg = write_config(tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port,
                       units=[1])  # fmt: skip
    sock = tmp_path / "control.sock"
    proc = start_agent(cfg, tmp_path / "agent.log")
    try:
        wait_until(sock.exists, 20, "control socket")

        def status() -> dict[str, object]:
            return asyncio.run(request(sock, "status"))

        good = cfg.read_text()
        cfg.write_text(good + "\nbogus_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (status().get("reload") or {}).get("ok") is False, 20, "refused")
        assert proc.poll() is None
        problems = json.dumps(status()["reload"])
        assert "bogus_key" in problems
        write_config(cfg, broker_port=broker.port, modbus_port=sim.port, units=[1, 2])
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (status().get("reload") or {}).get("ok") is True, 20, "reloaded")
        wait_until(lambda: "meter-2" in json.dumps(status()["sources"]), 20, "new device")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sim.stop()


async def test_reload_applies_health_and_metrics_without_touching_the_buses(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """[health] and [metrics] take effect on reload; the bus keeps running (its counters too)."""
    sim, cfg, agent = meter_agent(tmp_path, broker, units=(1,))
    async with sim:
        task = asyncio.create_task(agent.run())
        try:
            await wait(lambda: any(r["device"] == "meter-1" for r in recorder.readings()))
            source = agent.sources[0]
            port = free_port()
            cfg.write_text(
                cfg.read_text().replace(
                    "[signing]",
                    f'[health]\nevery_s = 10\n[metrics]\nlisten = "127.0.0.1:{port}"\n[signing]',
                )
            )
            result = await agent.reload("test")
            assert result["ok"] is True, result
            assert result["buses_restarted"] == [] and result["applied"] == ["health", "metrics"]
            assert agent.sources[0] is source, "the bus was not restarted"
            # The file watcher sees this text as loaded: it does not reload it a second time.
            assert agent._config_stamp == _stamp(cfg)
            assert agent.ops.health_every_s == 10
            health = [t for t in agent.ops._tasks if t.get_name() == "health"]
            assert len(health) == 1 and not health[0].done()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert b"200 OK" in body.split(b"\r\n", 1)[0] and b"cityedge_" in body
            # Metrics off again: the listener closes.
            cfg.write_text(cfg.read_text().replace(f'listen = "127.0.0.1:{port}"\n', ""))
            result = await agent.reload("test")
            assert result["applied"] == ["metrics"] and agent.ops.metrics is None
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
