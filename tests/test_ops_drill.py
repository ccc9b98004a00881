"""cityedge drill against a fake agent: a real control socket server implementing the protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityedge.control import ControlServer
from cityedge.drill import STEPS, DrillError, DrillRunner

READING_BYTES = 50


class FakeAgent:
    """Just enough of an agent to be drilled: readings flow, faults behave as promised.

    Each tick every answering device adds 5 telemetry readings; a connected
    uplink acks everything waiting; over the bound, telemetry is dropped
    down to 95 %. ``broken`` names a promise this agent breaks.
    """

    def __init__(self, broken: str | None = None, signer: bool = True) -> None:
        self.broken = broken
        self.paused = False
        self.configured_bound = 1 << 20
        self.bound = self.configured_bound
        self.alert_bytes = 2 * READING_BYTES  # two alerts wait in the outbox throughout
        self.telemetry_bytes = 0
        self.acked = 0
        self.counters: dict[str, int] = {}
        self.devices = {"meter-1": "ok", "pump-2": "ok"}
        self.silent: set[str] = set()
        self.raised = 0
        self.signer = {"state": "ok", "restarts": 0} if signer else None
        self.signer_down_ticks = 0
        self.commands: list[dict[str, Any]] = []

    def tick(self) -> None:
        for dev in self.devices:
            if dev in self.silent:
                if self.devices[dev] != "down":
                    self.devices[dev] = "down"
                    if self.broken != "no_alert":
                        self.raised += 1
            else:
                self.devices[dev] = "ok"
                self.telemetry_bytes += 5 * READING_BYTES
        if self.signer_down_ticks:
            self.signer_down_ticks -= 1
            if not self.signer_down_ticks and self.signer is not None:
                self.signer["state"] = "ok"
        signing = self.signer is None or self.signer["state"] == "ok"
        if not self.paused and signing and self.broken != "no_drain":
            self.acked += self.telemetry_bytes // READING_BYTES
            self.telemetry_bytes = 0
        if self.alert_bytes + self.telemetry_bytes > self.bound and self.broken != "no_drops":
            target = int(self.bound * 0.95) - self.alert_bytes
            drop = self.telemetry_bytes - max(0, target - target % READING_BYTES)
            self.telemetry_bytes -= drop
            key = "dropped_telemetry"
            self.counters[key] = self.counters.get(key, 0) + drop // READING_BYTES

    async def status(self, _req: dict[str, Any]) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "gateway": "gw-test",
            "site": "lab",
            "version": "0.0-test",
            "outbox": {
                "readings_waiting": (self.alert_bytes + self.telemetry_bytes) // READING_BYTES,
                "bytes_waiting": self.alert_bytes + self.telemetry_bytes,
                "bound_bytes": self.bound,
                "counters": dict(self.counters),
            },
            "uplink": {"state": "paused" if self.paused else "connected",
                       "readings_acked": self.acked},
            "sources": {"modbus:field": {"devices": {
                d: {"state": s} for d, s in self.devices.items()}}},
            "alerts": {"raised": {"yellow": self.raised}},
        }  # fmt: skip
        if self.signer is not None:
            snap["signer"] = dict(self.signer)
        return snap

    async def uplink_pause(self, req: dict[str, Any]) -> dict[str, Any]:
        self.commands.append(req)
        self.paused = bool(req["paused"])
        return {"paused": self.paused}

    async def signer_restart(self, req: dict[str, Any]) -> dict[str, Any]:
        self.commands.append(req)
        assert self.signer is not None
        self.signer["state"] = "restarting"
        self.signer["restarts"] += 1
        self.signer_down_ticks = 5
        return {"restarted": True}

    async def device_silence(self, req: dict[str, Any]) -> dict[str, Any]:
        self.commands.append(req)
        if req["device"] not in self.devices:
            raise KeyError(f"no device {req['device']!r}")
        (self.silent.add if req["silent"] else self.silent.discard)(req["device"])
        return {"device": req["device"], "silent": req["silent"]}

    async def outbox_bound(self, req: dict[str, Any]) -> dict[str, Any]:
        self.commands.append(req)
        self.bound = req["max_bytes"] or self.configured_bound
        return {"bound_bytes": self.bound, "configured_bytes": self.configured_bound}

    async def end(self, req: dict[str, Any]) -> dict[str, Any]:
        self.commands.append(req)
        self.paused, self.bound = False, self.configured_bound
        self.silent.clear()
        return {"ended": True}

    def handlers(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "drill_uplink_pause": self.uplink_pause,
            "drill_signer_restart": self.signer_restart,
            "drill_device_silence": self.device_silence,
            "drill_outbox_bound": self.outbox_bound,
            "drill_end": self.end,
        }


@contextlib.asynccontextmanager
async def serving(agent: FakeAgent) -> AsyncIterator[Path]:
    """The fake agent behind a real control socket, ticking every 10 ms."""

    async def ticker() -> None:
        while True:
            agent.tick()
            await asyncio.sleep(0.01)

    with tempfile.TemporaryDirectory(prefix="ce-") as d:
        server = ControlServer(Path(d) / "control.sock", agent.handlers())
        await server.start()
        task = asyncio.create_task(ticker())
        try:
            yield server.path
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.close()


def runner(path: Path, **kw: Any) -> DrillRunner:
    return DrillRunner(path, cut_s=0.15, step_timeout_s=1.0, poll_s=0.02, **kw)


async def test_a_healthy_agent_passes_every_step() -> None:
    """Buffering, signer recovery, alerting and drops all behave: every step passes."""
    agent = FakeAgent()
    async with serving(agent) as path:
        report = await runner(path).run()
    assert [s.name for s in report.steps] == list(STEPS)
    assert [s.outcome for s in report.steps] == ["pass"] * 4, report.render_text()
    assert report.passed and report.gateway == "gw-test"
    cut = report.steps[0].details
    assert cut["waiting_cut"] > cut["waiting_before"] and cut["waiting_after"] <= 2
    assert report.steps[3].details["dropped_alert"] == 0
    assert not agent.paused and agent.bound == agent.configured_bound and not agent.silent
    sent = [c for c in agent.commands if c["cmd"] != "drill_end"]
    assert all(c["expires_s"] == 600.0 for c in sent)  # the agent undoes them by itself


@pytest.mark.parametrize(
    ("broken", "step", "says"),
    [
        ("no_alert", "device_silent", "0 alert(s) raised"),
        ("no_drops", "disk_nearly_full", "no drop counted"),
        ("no_drain", "uplink_cut", "still waiting"),
    ],
)
async def test_a_broken_promise_fails_its_step(broken: str, step: str, says: str) -> None:
    """An agent that does not alert, drop or drain fails that step, and says what it saw."""
    agent = FakeAgent(broken=broken)
    async with serving(agent) as path:
        report = await runner(path).run([step])
    (result,) = report.steps
    assert result.outcome == "fail" and says in result.observed, result.observed
    assert not report.passed
    assert "FAILED" in report.render_text() and "expected:" in report.render_text()
    assert not agent.paused and agent.bound == agent.configured_bound  # undone anyway


async def test_no_signer_is_skipped_and_report_is_json() -> None:
    """Without a signer that step is skipped (not failed); the JSON report is complete."""
    agent = FakeAgent(signer=False)
    async with serving(agent) as path:
        report = await runner(path).run(["signer_restart"])
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["kind"] == "drill_report" and doc["passed"] is True
    assert doc["steps"][0]["outcome"] == "skipped"
    assert doc["started"].endswith("Z") and doc["finished"].endswith("Z")


async def test_refused_command_fails_the_step_not_the_drill() -> None:
    """A drill command the agent refuses fails that step with the agent's error."""
    agent = FakeAgent()
    async with serving(agent) as path:
        report = await runner(path, device="nonexistent").run(["device_silent", "uplink_cut"])
    assert report.steps[0].outcome == "fail" and "nonexistent" in report.steps[0].observed
    assert report.steps[1].outcome == "pass"


async def test_agent_without_drill_commands() -> None:
    """An agent that lacks the drill protocol fails each step naming the command."""
    agent = FakeAgent()
    async with serving(agent) as path:
        agent_handlers = {"status": agent.status}
        server = ControlServer(path.with_name("old.sock"), agent_handlers)
        await server.start()
        try:
            with pytest.raises(DrillError, match="drill_end"):
                await runner(server.path).command("drill_end")
            report = await runner(server.path).run(["uplink_cut"])
        finally:
            await server.close()
    assert report.steps[0].outcome == "fail"
    assert "drill_uplink_pause" in report.steps[0].observed


async def test_no_agent_at_all() -> None:
    """No socket: a DrillError saying nobody answers."""
    with pytest.raises(DrillError, match="no answer"):
        await runner(Path("/nonexistent/control.sock")).run()


def test_unknown_step_is_refused() -> None:
    """A step name that does not exist is refused before anything runs."""
    with pytest.raises(ValueError, match="unknown drill steps"):
        asyncio.run(runner(Path("/nonexistent")).run(["flood"]))
