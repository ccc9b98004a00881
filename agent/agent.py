"""The agent: wires sources -> writer -> outbox -> sender, and supervises them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from cityedge import __version__
from cityedge.config.model import Config
from cityedge.control import ControlServer
from cityedge.outbox import Outbox
from cityedge.pipeline import Writer
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
        self.sender = Sender(
            config.uplink,
            self.outbox,
            self.executor,
            gateway_id=config.site.gateway_id,
            site_id=config.site.id,
        )
        state_dir = storage.state_dir or storage.path.parent
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
            asyncio.create_task(s.run(self.writer.sink), name=f"source:{s.name}")
            for s in self.sources
        ]
        summary_task = asyncio.create_task(self._summaries(), name="summary")
        try:
            await self._stop.wait()
        finally:
            log.info("agent_stopping")
            for t in [*source_tasks, summary_task]:
                t.cancel()
            await asyncio.gather(*source_tasks, summary_task, return_exceptions=True)
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
            log.info("agent_stopped")

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
        }
