"""``cityedge drill``: a scripted exercise on a live gateway, and a report to file.

The runner talks to the running agent over its control socket
(:func:`cityedge.control.request`) with the drill commands documented in
docs/operations.md ("Drill protocol"), watches the agent's ``status`` while
each fault is on, and checks the behaviour the design promises:

``uplink_cut``
    The uplink is paused: readings keep being accepted and wait in the
    outbox; once resumed the backlog drains.
``signer_restart``
    The signer is restarted: it comes back and batches are acknowledged
    again. Skipped when the agent reports no signer.
``device_silent``
    One device is made silent (the agent stops hearing it): it is reported
    down and an alert is raised; when it speaks again it recovers.
``disk_nearly_full``
    With the uplink paused, the outbox bound is lowered just above what it
    holds: readings are dropped by the policy (telemetry first, counted) and
    the bytes stay under the bound; then the bound is restored.

Every fault is undone in a ``finally`` (``drill_end``), and every drill
command carries ``expires_s`` so the agent undoes it by itself if the runner
dies. The report (:class:`DrillReport`) renders as text for a technician and
as JSON for the operations centre.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cityedge.control import request as control_request
from cityedge.readings import format_ts, utc_now

STEPS = ("uplink_cut", "signer_restart", "device_silent", "disk_nearly_full")
Outcome = Literal["pass", "fail", "skipped"]
Request = Callable[..., Awaitable[dict[str, Any]]]


class DrillError(Exception):
    """The agent refused a drill command or did not answer."""


@dataclass(slots=True)
class StepResult:
    name: str
    outcome: Outcome
    expected: str
    observed: str
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DrillReport:
    gateway: str | None
    site: str | None
    version: str | None
    started: str
    finished: str = ""
    steps: list[StepResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No step failed (skipped steps do not fail a drill)."""
        return all(s.outcome != "fail" for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "drill_report", "passed": self.passed, **asdict(self)}

    def render_text(self) -> str:
        out = [
            f"cityedge drill: gateway {self.gateway} (site {self.site}), cityedge {self.version}",
            f"from {self.started} to {self.finished}",
        ]
        for s in self.steps:
            out.append(f"{s.outcome.upper():<8}{s.name:<18}{s.observed}")
            if s.outcome == "fail":
                out.append(f"{'':<26}expected: {s.expected}")
        counts = {o: sum(s.outcome == o for s in self.steps) for o in ("pass", "fail", "skipped")}
        verdict = "PASSED" if self.passed else "FAILED"
        out.append(
            f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, "
            f"{counts['skipped']} skipped"
        )
        return "\n".join(out)


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _d(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def waiting(st: Mapping[str, Any]) -> int:
    return int(_num(_d(st.get("outbox")).get("readings_waiting")))


def acked(st: Mapping[str, Any]) -> int:
    return int(_num(_d(st.get("uplink")).get("readings_acked")))


def counter(st: Mapping[str, Any], name: str) -> int:
    return int(_num(_d(_d(st.get("outbox")).get("counters")).get(name)))


def alerts_raised(st: Mapping[str, Any]) -> int:
    return int(sum(_num(v) for v in _d(_d(st.get("alerts")).get("raised")).values()))


def device_state(st: Mapping[str, Any], device: str) -> str | None:
    for src in _d(st.get("sources")).values():
        ds = _d(_d(src).get("devices")).get(device)
        if ds is not None:
            return str(_d(ds).get("state"))
    return None


def devices(st: Mapping[str, Any]) -> list[str]:
    return sorted(d for src in _d(st.get("sources")).values() for d in _d(_d(src).get("devices")))


class DrillRunner:
    """Runs the drill steps against the agent behind ``socket``."""

    def __init__(
        self,
        socket: Path,
        *,
        device: str | None = None,
        cut_s: float = 20.0,
        step_timeout_s: float = 120.0,
        poll_s: float = 1.0,
        headroom_bytes: int = 4096,
        expires_s: float = 600.0,
        request: Request = control_request,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """``device``: the one to silence (default: the first one that is ok)."""
        self.socket = socket
        self.device = device
        self.cut_s = cut_s
        self.step_timeout_s = step_timeout_s
        self.poll_s = poll_s
        self.headroom_bytes = headroom_bytes
        self.expires_s = expires_s
        self._request = request
        self._now = now

    async def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One control command; DrillError unless the agent answers ok."""
        if cmd.startswith("drill_") and cmd != "drill_end":
            args.setdefault("expires_s", self.expires_s)
        try:
            answer = await self._request(self.socket, cmd, **args)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DrillError(f"{cmd}: no answer from the agent: {exc}") from exc
        if not answer.get("ok"):
            raise DrillError(f"{cmd}: {answer.get('error', 'refused')}")
        return answer

    async def status(self) -> dict[str, Any]:
        return await self.command("status")

    async def wait_for(
        self, check: Callable[[dict[str, Any]], bool], within_s: float | None = None
    ) -> tuple[bool, dict[str, Any], float]:
        """Poll status until ``check`` holds; (held, last status, seconds waited)."""
        start = time.monotonic()
        deadline = start + (self.step_timeout_s if within_s is None else within_s)
        while True:
            st = await self.status()
            if check(st):
                return True, st, time.monotonic() - start
            if time.monotonic() >= deadline:
                return False, st, time.monotonic() - start
            await asyncio.sleep(self.poll_s)

    async def run(self, steps: Sequence[str] = STEPS) -> DrillReport:
        """Run ``steps`` in order; faults are undone whatever happens."""
        unknown = set(steps) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown drill steps {sorted(unknown)}; known: {list(STEPS)}")
        first = await self.status()
        report = DrillReport(
            first.get("gateway"), first.get("site"), first.get("version"), format_ts(self._now())
        )
        try:
            for name in steps:
                started = time.monotonic()
                try:
                    result = await getattr(self, f"_{name}")()
                except DrillError as exc:
                    result = StepResult(name, "fail", "the agent carries out the drill", str(exc))
                finally:
                    undo_error = await self._undo()
                if undo_error is not None:
                    result.outcome = "fail"
                    result.observed += f"; undoing the fault failed: {undo_error}"
                result.duration_s = round(time.monotonic() - started, 2)
                report.steps.append(result)
        finally:
            report.finished = format_ts(self._now())
        return report

    async def _undo(self) -> str | None:
        """Undo every drill fault (``drill_end``); the error, if it could not."""
        try:
            await self.command("drill_end")
        except DrillError as exc:
            return str(exc)
        return None

    # -- the steps -----------------------------------------------------------

    async def _uplink_cut(self) -> StepResult:
        expected = "readings buffer in the outbox while the uplink is cut and drain after"
        before = await self.status()
        await self.command("drill_uplink_pause", paused=True)
        await asyncio.sleep(self.cut_s)
        during = await self.status()
        grown = waiting(during) - waiting(before)
        await self.command("drill_uplink_pause", paused=False)
        drained, after, took = await self.wait_for(
            lambda st: waiting(st) <= waiting(before) and acked(st) >= acked(during) + grown
        )
        details = {
            "waiting_before": waiting(before),
            "waiting_cut": waiting(during),
            "waiting_after": waiting(after),
            "drain_s": round(took, 2),
        }
        if grown <= 0:
            observed = f"nothing buffered in {self.cut_s:g} s cut (are readings arriving?)"
            return StepResult("uplink_cut", "fail", expected, observed, details=details)
        if not drained:
            observed = f"{grown} buffered; {waiting(after)} still waiting after {took:.0f} s"
            return StepResult("uplink_cut", "fail", expected, observed, details=details)
        observed = f"{grown} readings buffered during the cut, drained in {took:.1f} s"
        return StepResult("uplink_cut", "pass", expected, observed, details=details)

    async def _signer_restart(self) -> StepResult:
        expected = "the signer comes back and signed batches are acknowledged again"
        before = await self.status()
        if "signer" not in before:
            return StepResult("signer_restart", "skipped", expected, "no signer configured")
        answer = await self.command("drill_signer_restart")
        ok, after, took = await self.wait_for(
            lambda st: _d(st.get("signer")).get("state") == "ok" and acked(st) > acked(before)
        )
        details = {
            "answer": {k: v for k, v in answer.items() if k != "ok"},
            "signer": dict(_d(after.get("signer"))),
            "recovery_s": round(took, 2),
        }
        if not ok:
            observed = f"signer {_d(after.get('signer')).get('state')}, no new acks in {took:.0f} s"
            return StepResult("signer_restart", "fail", expected, observed, details=details)
        observed = f"signer back and batches acknowledged {took:.1f} s after the restart"
        return StepResult("signer_restart", "pass", expected, observed, details=details)

    async def _device_silent(self) -> StepResult:
        expected = "the silent device is reported down with an alert, and recovers"
        before = await self.status()
        ok_devices = [d for d in devices(before) if device_state(before, d) == "ok"]
        dev = self.device or (ok_devices[0] if ok_devices else None)
        if dev is None:
            return StepResult("device_silent", "skipped", expected, "no device is answering")
        await self.command("drill_device_silence", device=dev, silent=True)
        down, during, t_down = await self.wait_for(
            lambda st: device_state(st, dev) == "down" and alerts_raised(st) > alerts_raised(before)
        )
        await self.command("drill_device_silence", device=dev, silent=False)
        back, _after, t_back = await self.wait_for(lambda st: device_state(st, dev) == "ok")
        details = {
            "device": dev,
            "state_during": device_state(during, dev),
            "alerts_raised": alerts_raised(during) - alerts_raised(before),
            "down_after_s": round(t_down, 2),
            "recovered_after_s": round(t_back, 2),
        }
        if not down:
            observed = (
                f"{dev}: state {device_state(during, dev)}, "
                f"{details['alerts_raised']} alert(s) raised in {t_down:.0f} s"
            )
            return StepResult("device_silent", "fail", expected, observed, details=details)
        if not back:
            observed = f"{dev} down with an alert but not recovered in {t_back:.0f} s"
            return StepResult("device_silent", "fail", expected, observed, details=details)
        observed = f"{dev} down with an alert in {t_down:.1f} s, recovered in {t_back:.1f} s"
        return StepResult("device_silent", "pass", expected, observed, details=details)

    async def _disk_nearly_full(self) -> StepResult:
        expected = "drops counted by policy (telemetry first), bytes kept under the bound"
        await self.command("drill_uplink_pause", paused=True)
        before = await self.status()
        held = int(_num(_d(before.get("outbox")).get("bytes_waiting")))
        bound = held + self.headroom_bytes
        await self.command("drill_outbox_bound", max_bytes=bound)
        dropped, during, took = await self.wait_for(
            lambda st: counter(st, "dropped_telemetry") > counter(before, "dropped_telemetry")
        )
        await self.command("drill_outbox_bound", max_bytes=None)
        over = int(_num(_d(during.get("outbox")).get("bytes_waiting"))) - bound
        alert_drops = counter(during, "dropped_alert") - counter(before, "dropped_alert")
        n = counter(during, "dropped_telemetry") - counter(before, "dropped_telemetry")
        details = {
            "bound_bytes": bound,
            "dropped_telemetry": n,
            "dropped_alert": alert_drops,
            "bytes_waiting": bound + over,
            "first_drop_s": round(took, 2),
        }
        if not dropped:
            observed = f"no drop counted in {took:.0f} s with the bound at {bound} bytes"
            return StepResult("disk_nearly_full", "fail", expected, observed, details=details)
        if over > 0 or alert_drops > 0:
            observed = f"{n} telemetry dropped, but {over} bytes over, {alert_drops} alerts dropped"
            return StepResult("disk_nearly_full", "fail", expected, observed, details=details)
        observed = f"{n} telemetry readings dropped and counted at a {bound}-byte bound"
        return StepResult("disk_nearly_full", "pass", expected, observed, details=details)
