"""The agent: wires sources -> writer -> outbox -> sender, and supervises them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from cityedge import __version__
from cityedge.alert_store import AlertStore
from cityedge.alerting import AlertEngine, rules_from
from cityedge.commands import CommandError, CommandRouter
from cityedge.config.model import Config
from cityedge.control import ControlServer
from cityedge.outbox import Outbox
from cityedge.pipeline import Writer
from cityedge.readings import Priority, Reading
from cityedge.sources import SourceContext, build_sources
from cityedge.uplink.sender import Sender

log = structlog.get_logger("cityedge.agent")


class Agent:
    def __init__(self, config: Config, *, summary_every_s: float = 60.0) -> None:
        self.config = config
        self.summary_every_s = summary_every_s
        self.started = time.time()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        storage = config.storage
        self.outbox = Outbox(
            storage.path, max_bytes=storage.max_bytes, durability=storage.durability
        )
        self.writer = Writer(self.outbox, self.executor)
        state_dir = storage.state_dir or storage.path.parent
        self.state_dir = state_dir
        self.alert_store = AlertStore(state_dir / "alerts.json", config.alerts.resend_s)
        self.alerts = AlertEngine(rules_from(config), config.site.gateway_id)
        self.commands = CommandRouter(self._answer)
        self.commands.register("ack_alert", self._cmd_ack_alert)
        self.commands.register("status", self._cmd_status)
        self._command_tasks: set[asyncio.Task[None]] = set()
        self.sender = Sender(
            config.uplink,
            self.outbox,
            self.executor,
            gateway_id=config.site.gateway_id,
            site_id=config.site.id,
            on_message=self._on_downlink,
            subscriptions=(),
        )
        self.sender.subscriptions = (self.sender.topic("cmd"),)
        self.sources = build_sources(config, SourceContext(config.site, state_dir))
        self.control = ControlServer(state_dir / "control.sock", {"status": self._status})
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await loop.run_in_executor(self.executor, self.outbox.open)
        log.info(
            "agent_started",
            version=__version__,
            gateway=self.config.site.gateway_id,
            devices=len(self.config.devices),
            backlog=sum(self.outbox.count_by_prio),
            open_s=round(time.perf_counter() - t0, 3),
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.control.start()
        writer_task = asyncio.create_task(self.writer.run(), name="writer")
        sender_task = asyncio.create_task(self.sender.run(), name="sender")
        source_tasks = [
            asyncio.create_task(s.run(self.sink), name=f"source:{s.name}") for s in self.sources
        ]
        summary_task = asyncio.create_task(self._summaries(), name="summary")
        resend_task = asyncio.create_task(self._resend_alerts(), name="alert-resend")
        try:
            await self._stop.wait()
        finally:
            log.info("agent_stopping")
            background = [*source_tasks, summary_task, resend_task, *self._command_tasks]
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            await self.writer.flush()
            await self.sender.stop()
            try:
                await asyncio.wait_for(sender_task, 10)
            except TimeoutError:
                log.warning("uplink_stop_timeout")
            await self.control.close()
            await loop.run_in_executor(self.executor, self.outbox.close)
            self.executor.shutdown(wait=True)
            self.alert_store.close()
            log.info("agent_stopped")

    async def sink(self, readings: Sequence[Reading]) -> None:
        """Every source's sink: telemetry to the outbox, threshold alerts ahead of it."""
        await self.writer.submit(readings)
        alerts = self.alerts.on_readings(readings)
        if alerts:
            await self.raise_alerts(alerts)

    async def raise_alerts(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            await asyncio.to_thread(self.alert_store.record, rec)
            log.warning(
                "alert",
                alert_id=rec["alert_id"],
                level=rec["level"],
                transition=rec["transition"],
                device=rec["device"],
                point=rec["point"],
            )
        await self.writer.submit(records, Priority.ALERT)

    async def _resend_alerts(self) -> None:
        """Unacknowledged alerts go again every resend period until the cloud acks them."""
        while True:
            await asyncio.sleep(min(30.0, self.alert_store.resend_s))
            due = await asyncio.to_thread(self.alert_store.due)
            if due:
                log.info("alerts_resent", count=len(due))
                await self.writer.submit(due, Priority.ALERT)

    def _on_downlink(self, topic: str, payload: bytes) -> None:
        if len(self._command_tasks) >= 64:
            self.commands.rejected["busy"] += 1
            log.warning("command_rejected", reason="busy")
            return
        task = asyncio.get_running_loop().create_task(self.commands.handle(payload))
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        await self.writer.submit([message], Priority.EVENT)

    async def _cmd_ack_alert(self, args: dict[str, Any]) -> dict[str, Any]:
        alert_id = args.get("alert_id")
        if not isinstance(alert_id, str):
            raise CommandError("args.alert_id must be a string")
        known = await asyncio.to_thread(self.alert_store.ack, alert_id)
        if not known:
            raise CommandError(f"no unacknowledged alert {alert_id}")
        return {"alert_id": alert_id, "acked": True}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._status(args)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_every_s)
            s = self.sender.stats
            log.info(
                "agent_summary",
                accepted=self.writer.accepted,
                outbox_waiting=sum(self.outbox.count_by_prio),
                outbox_bytes=self.outbox.total_bytes(),
                uplink=s.state,
                batches_acked=s.batches_acked,
                readings_acked=s.readings_acked,
            )

    async def _status(self, _req: dict[str, Any]) -> dict[str, Any]:
        s = self.sender.stats
        return {
            "gateway": self.config.site.gateway_id,
            "site": self.config.site.id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "writer": {
                "accepted": self.writer.accepted,
                "refused": self.writer.refused,
                "queued": self.writer.depth(),
            },
            "outbox": self.outbox.stats(),
            "uplink": {
                "state": s.state,
                "connects": s.connects,
                "reconnects": s.reconnects,
                "batches_published": s.batches_published,
                "batches_acked": s.batches_acked,
                "readings_acked": s.readings_acked,
                "live_batches": s.live_batches,
                "backlog_batches": s.backlog_batches,
                "last_error": s.last_error,
            },
            "sources": {src.name: src.status() for src in self.sources},
            "alerts": {
                "active": len(self.alerts.tracker.active()),
                "raised": {lvl.label: n for lvl, n in self.alerts.tracker.raised.items()},
                "unacknowledged": self.alert_store.unacked(),
            },
            "commands": {
                "done": dict(self.commands.done),
                "rejected": dict(self.commands.rejected),
            },
        }
