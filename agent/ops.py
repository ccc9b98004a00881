"""Operations around the running agent: systemd, clock, metrics, health, drills.

Kept out of :mod:`cityedge.agent` so the agent stays the data path; this
module only watches it and, for drills, injects faults that expire by
themselves (docs/operations.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from cityedge.clock import ClockState
from cityedge.health import build_health
from cityedge.metrics import MetricsServer, parse_listen
from cityedge.notify import Notifier
from cityedge.readings import Priority, utc_now
from cityedge.tasks import OUTER_EVERY_S, cancel_and_wait

if TYPE_CHECKING:
    from cityedge.agent import Agent
    from cityedge.config.model import Config

log = structlog.get_logger("cityedge.ops")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
DEFAULT_EXPIRY_S = 600.0
# How often a GPS fix is offered to the clock: a fix at start (or a GPS that jumps)
# is taken within a second, not ten; a few attribute reads per source.
GPS_TIME_EVERY_S = 1.0


class Operations:
    def __init__(self, agent: Agent, clock: ClockState) -> None:
        self.agent = agent
        self.clock = clock
        self.notifier = Notifier.from_env()
        cfg = agent.config
        listen = cfg.metrics.listen
        self.metrics = MetricsServer(*parse_listen(listen), agent.snapshot) if listen else None
        self.health_every_s = cfg.health.every_s
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_health: dict[str, Any] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self.metrics is not None:
            await self.metrics.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.notifier.watchdog_loop(), name="watchdog"),
            loop.create_task(self._health_loop(), name="health"),
            loop.create_task(self._gps_time_loop(), name="gps-time"),
        ]
        self.ready()

    async def apply(self, old: Config, new: Config) -> list[str]:
        """A reloaded config's [health] and [metrics]: applied now; returns what changed.

        A new health period restarts the health loop (the next message comes
        one new period after the reload); a new metrics address closes the
        old listener and opens the new one (a bind that fails is logged and
        the agent runs on without metrics, as at start).
        """
        changed = []
        if new.health.every_s != old.health.every_s:
            changed.append("health")
            self.health_every_s = new.health.every_s
            for task in [t for t in self._tasks if t.get_name() == "health"]:
                await cancel_and_wait([task], OUTER_EVERY_S, OUTER_EVERY_S)
                self._tasks.remove(task)
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._health_loop(), name="health"))
        if new.metrics.listen != old.metrics.listen:
            changed.append("metrics")
            if self.metrics is not None:
                await self.metrics.close()
                self.metrics = None
            listen = new.metrics.listen
            if listen:
                server = MetricsServer(*parse_listen(listen), self.agent.snapshot)
                try:
                    await server.start()
                except OSError as exc:
                    log.error("metrics_listen_failed", listen=listen, error=str(exc))
                else:
                    self.metrics = server
        return changed

    def ready(self) -> None:
        """READY=1 for systemd, with what the agent is doing (after start and each reload)."""
        self.notifier.ready(f"polling {len(self.agent.config.devices)} devices")

    async def stop(self) -> None:
        self.notifier.stopping()
        for handle in self._expiry.values():
            handle.cancel()
        await cancel_and_wait(self._tasks, OUTER_EVERY_S, OUTER_EVERY_S)
        if self.metrics is not None:
            await self.metrics.close()
        self.notifier.close()

    # -- periodic --------------------------------------------------------------

    async def _health_loop(self) -> None:
        """The periodic health message, on the events topic, for the monthly report."""
        while True:
            await asyncio.sleep(self.health_every_s)
            await self.publish_health()

    async def publish_health(self) -> dict[str, Any]:
        snapshot = await self.agent.snapshot()
        message = build_health(snapshot, self._last_health, now=utc_now())
        self._last_health = snapshot
        await self.agent.writer.submit([{"type": "health", **message}], Priority.EVENT)
        return message

    async def _gps_time_loop(self) -> None:
        """A GPS receiver on a serial line is the time reference when NTP is missing."""
        while True:
            await asyncio.sleep(GPS_TIME_EVERY_S)
            for src in self.agent.sources:
                latest = getattr(src, "latest_fix", None)
                fix = latest() if callable(latest) else None
                if fix is not None:
                    self.clock.reference(fix.time, fix.received_mono)

    # -- drills ------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "drill_uplink_pause": self._drill_uplink_pause,
            "drill_signer_restart": self._drill_signer_restart,
            "drill_device_silence": self._drill_device_silence,
            "drill_outbox_bound": self._drill_outbox_bound,
            "drill_end": self._drill_end,
        }

    def _expire_later(self, name: str, req: dict[str, Any], undo: Callable[[], object]) -> None:
        old = self._expiry.pop(name, None)
        if old is not None:
            old.cancel()
        expires_s = float(req.get("expires_s", DEFAULT_EXPIRY_S))

        def fire() -> None:
            self._expiry.pop(name, None)
            log.warning("drill_expired", fault=name)
            result = undo()
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.append(task)

        self._expiry[name] = asyncio.get_running_loop().call_later(expires_s, fire)

    async def _drill_uplink_pause(self, req: dict[str, Any]) -> dict[str, Any]:
        paused = bool(req.get("paused", True))
        log.warning("drill_command", cmd="drill_uplink_pause", paused=paused)
        await self.agent.pause_uplink(paused)
        if paused:
            self._expire_later("uplink", req, lambda: self.agent.pause_uplink(False))
        elif (h := self._expiry.pop("uplink", None)) is not None:
            h.cancel()
        return {"paused": paused}

    async def _drill_signer_restart(self, req: dict[str, Any]) -> dict[str, Any]:
        log.warning("drill_command", cmd="drill_signer_restart")
        if self.agent.signer is None:
            raise ValueError("signing is off on this gateway: no signer to restart")
        # The agent cannot restart the signer's own unit (no privileges): it
        # drops its connection, which the signer sees as a restart of its client.
        await asyncio.to_thread(self.agent.signer.close)
        return {"restarted": True}

    async def _drill_device_silence(self, req: dict[str, Any]) -> dict[str, Any]:
        device = str(req.get("device"))
        if device not in {d.id for d in self.agent.config.devices}:
            known = ", ".join(d.id for d in self.agent.config.devices)
            raise ValueError(f"unknown device {device!r} (known: {known})")
        silent = bool(req.get("silent", True))
        log.warning("drill_command", cmd="drill_device_silence", device=device, silent=silent)
        self.agent.silence(device, silent)
        key = f"silence:{device}"
        if silent:
            self._expire_later(key, req, lambda: self.agent.silence(device, False))
        elif (h := self._expiry.pop(key, None)) is not None:
            h.cancel()
        return {"device": device, "silent": silent}

    async def _drill_outbox_bound(self, req: dict[str, Any]) -> dict[str, Any]:
        configured = self.agent.config.storage.max_bytes
        value = req.get("max_bytes")
        bound = configured if value is None else int(value)
        if bound < 4096:
            raise ValueError("max_bytes must be at least 4096")
        log.warning("drill_command", cmd="drill_outbox_bound", max_bytes=bound)
        await self.agent.set_outbox_bound(bound)
        if value is not None:
            self._expire_later("bound", req, lambda: self.agent.set_outbox_bound(configured))
        return {"bound_bytes": bound, "configured_bytes": configured}

    async def _drill_end(self, req: dict[str, Any]) -> dict[str, Any]:
        log.warning("drill_command", cmd="drill_end")
        for handle in list(self._expiry.values()):
            handle.cancel()
        self._expiry.clear()
        await self.agent.pause_uplink(False)
        for dev in list(self.agent.silenced):
            self.agent.silence(dev, False)
        await self.agent.set_outbox_bound(self.agent.config.storage.max_bytes)
        return {"ended": True}
