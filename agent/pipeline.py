"""The writer: the bounded hand-off from sources to the outbox.

Sources await :meth:`Writer.submit`; the writer gathers what arrived within
``commit_interval_s`` (group commit) and commits it in the outbox thread. A
reading is *accepted* when that commit returns. The in-memory queue is bounded
in readings; when it is full, ``submit`` waits (polled buses then poll late,
which their schedulers count) rather than drop silently.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from cityedge.outbox import Outbox, StorageFull
from cityedge.readings import Priority, Reading
from cityedge.uplink.codec import reading_body

log = structlog.get_logger("cityedge.pipeline")


class Writer:
    def __init__(
        self,
        outbox: Outbox,
        executor: ThreadPoolExecutor,
        *,
        max_queue: int = 100_000,
        commit_interval_s: float = 0.02,
        max_commit_rows: int = 5_000,
    ) -> None:
        self.outbox = outbox
        self.executor = executor
        self.max_queue = max_queue
        self.commit_interval_s = commit_interval_s
        self.max_commit_rows = max_commit_rows
        self._queue: deque[tuple[int, Reading | dict[str, Any]]] = deque()
        self._cond = asyncio.Condition()
        self._closing = False
        self.accepted = 0
        self.refused = 0
        self.commits = 0
        self.waits = 0
        self.last_commit_s = 0.0

    async def submit(
        self, readings: Sequence[Reading | dict[str, Any]], prio: int = Priority.TELEMETRY
    ) -> None:
        """Queue readings (or alert / event records) for the outbox; waits while full."""
        async with self._cond:
            if len(self._queue) + len(readings) > self.max_queue:
                self.waits += 1
                await self._cond.wait_for(
                    lambda: len(self._queue) + len(readings) <= self.max_queue or self._closing
                )
            self._queue.extend((int(prio), r) for r in readings)
            self._cond.notify_all()

    async def sink(self, readings: Sequence[Reading]) -> None:
        """The :data:`cityedge.drivers.base.ReadingSink` for telemetry."""
        await self.submit(readings, Priority.TELEMETRY)

    def depth(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Commit what arrives until cancelled; then commit what is left."""
        try:
            while True:
                async with self._cond:
                    await self._cond.wait_for(lambda: bool(self._queue))
                await asyncio.sleep(self.commit_interval_s)
                await self._commit_some()
        finally:
            self._closing = True

    async def flush(self) -> None:
        """Commit everything queued (at shutdown)."""
        while self._queue:
            await self._commit_some()

    async def _commit_some(self) -> None:
        n = min(len(self._queue), self.max_commit_rows)
        chunk = [self._queue.popleft() for _ in range(n)]
        async with self._cond:
            self._cond.notify_all()
        if not chunk:
            return
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            await loop.run_in_executor(self.executor, _accept, self.outbox, chunk)
        except StorageFull:
            self.refused += len(chunk)
            return
        self.last_commit_s = time.perf_counter() - t0
        self.accepted += len(chunk)
        self.commits += 1


def _accept(outbox: Outbox, chunk: list[tuple[int, Reading | dict[str, Any]]]) -> int:
    return outbox.accept([(p, *_body(r)) for p, r in chunk])


def _body(item: Reading | dict[str, Any]) -> tuple[str, bytes]:
    if isinstance(item, Reading):
        return item.device, reading_body(item)
    return str(item.get("device", "")), json.dumps(item, separators=(",", ":")).encode()
