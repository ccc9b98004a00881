"""The sender: cuts batches from the outbox and keeps a bounded window in flight.

Order of service, every turn:

1. batches already cut but not acknowledged (after a reconnect or restart),
   oldest first, with their original ids;
2. alerts, then events (never held back by telemetry);
3. telemetry: *live* readings (accepted within ``live_window_s``) and
   *backlog* (older) alternate so that backlog gets ``backlog_share`` of the
   batches while both wait; either gets everything when the other is empty.

Within each stream readings go oldest first, so per device the order is kept
within live and within backlog, and every reading carries its outbox ``seq``
for the hub to merge the two (docs/uplink.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import UplinkConfig
from cityedge.outbox import Batch, Outbox, Sealer
from cityedge.readings import Priority
from cityedge.signing.protocol import SignerError
from cityedge.uplink.codec import KINDS, encode_batch
from cityedge.uplink.link import Link

log = structlog.get_logger("cityedge.uplink")


@dataclass(slots=True)
class UplinkStats:
    state: str = "connecting"
    connects: int = 0
    reconnects: int = 0
    batches_published: int = 0
    batches_acked: int = 0
    batches_nacked: int = 0
    readings_acked: int = 0
    live_batches: int = 0
    backlog_batches: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    signer_errors: int = 0
    signer_down_since: float | None = None
    by_kind: dict[str, int] = field(default_factory=dict)


# Connections in a row that the broker closed within 5 s of accepting them:
# the mark of two clients sharing one client id.
TAKEN_OVER_AFTER = 3


class Sender:
    def __init__(
        self,
        cfg: UplinkConfig,
        outbox: Outbox,
        executor: ThreadPoolExecutor,
        *,
        gateway_id: str,
        site_id: str,
        on_message: Callable[[str, bytes], None] | None = None,
        subscriptions: tuple[str, ...] = (),
        seal: Sealer | None = None,
        stats: UplinkStats | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.executor = executor
        self.gateway_id = gateway_id
        self.site_id = site_id
        self.base = f"{cfg.topic_prefix}/{site_id}/{gateway_id}"
        # A sender that replaces another (a reload, a drill's resume) carries its
        # counters on: they are totals since the agent started, as metrics expect.
        self.stats = stats if stats is not None else UplinkStats()
        self.stats.state, self.stats.connected_since = "connecting", None
        self._on_message = on_message
        self.subscriptions = subscriptions
        self._inflight: dict[int, Batch] = {}  # mid -> batch
        self._pending_acks: list[Batch] = []  # acked, not yet deleted from the outbox
        self._sent: set[int] = set()  # batch seqs published on this link
        self._acked = asyncio.Event()
        self._last_live_cut = 0.0
        self._credit = 0.0  # >0: backlog's turn
        self._link: Link | None = None
        self._stop = asyncio.Event()
        self._encode = partial(encode_batch, gateway_id=gateway_id, site_id=site_id)
        self._seal = seal
        self._signer_backoff = Backoff(0.5, 10.0)
        self.on_connect: list[Callable[[Link], Awaitable[None]]] = []  # birth messages
        # Awaited before the first batch sealed with a new key is published (the
        # keys message must reach the hub ahead of the batches it vouches for).
        self.on_new_key: Callable[[Link], Awaitable[None]] | None = None
        self._key_seen: bytes | None = None
        self.on_acked: Callable[[Batch], None] | None = None  # benchmarks, metrics

    def topic(self, kind: str) -> str:
        return f"{self.base}/{kind}"

    @property
    def link(self) -> Link | None:
        """The connection in use, if any."""
        return self._link

    async def run(self) -> None:
        """Connect, send, reconnect with full-jitter backoff; until stopped."""
        backoff = Backoff(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        short_sessions = 0
        while not self._stop.is_set():
            link = Link(
                self.cfg,
                self.cfg.client_id or self.gateway_id,
                self.topic("state"),
                self._ack,
                self._on_message,
            )
            self.stats.state = "connecting"
            if await link.open():
                self._link = link
                self.stats.connects += 1
                self.stats.state = "connected"
                self.stats.connected_since = time.time()
                backoff.reset()
                log.info("uplink_connected", broker=self.cfg.broker, port=self.cfg.port)
                for sub in self.subscriptions:
                    link.subscribe(sub)
                for hook in self.on_connect:
                    await hook(link)
                try:
                    await self._pump(link)
                finally:
                    self._link = None
                    self._inflight.clear()
                    self._sent.clear()
                    await link.close(graceful=self._stop.is_set())
                if self._stop.is_set():
                    break
                self.stats.reconnects += 1
            self.stats.state = "disconnected"
            self.stats.last_error = link.error
            delay = backoff.next_delay()
            log.warning("uplink_down", error=link.error, retry_in_s=round(delay, 2))
            lasted = time.time() - (self.stats.connected_since or 0.0)
            short_sessions = short_sessions + 1 if link.connected.is_set() and lasted < 5 else 0
            taken_over = "taken over" in (link.error or "").lower()
            if short_sessions >= TAKEN_OVER_AFTER or taken_over:
                client_id = self.cfg.client_id or self.gateway_id
                self.stats.last_error = (
                    f"{link.error}: the broker closes each connection at once "
                    f"(another client with client id {client_id!r}?)"
                )
            # Said at the third short session, then every 20th while it goes on.
            streak = short_sessions - TAKEN_OVER_AFTER
            if taken_over or (streak >= 0 and streak % 20 == 0):
                log.error(
                    "uplink_session_taken_over",
                    client_id=self.cfg.client_id or self.gateway_id,
                    short_sessions=short_sessions,
                    hint="the broker keeps closing the connection right after accepting it: "
                    "usually another client connects with this client id (the gateway_id "
                    "unless [uplink] client_id is set) and each closes the other. Give every "
                    "gateway its own gateway_id",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def stop(self) -> None:
        self._stop.set()

    def _ack(self, mid: int, ok: bool) -> None:
        batch = self._inflight.pop(mid, None)
        if batch is None:
            return
        if not ok:
            # The broker refused it (MQTT 5 reason code): it stays in the
            # outbox and goes again on the next connection.
            self.stats.batches_nacked += 1
            log.warning("batch_refused", batch=batch.id)
            if self._link is not None:
                self._link.mark_lost("publish_refused")
            return
        self.stats.batches_acked += 1
        self.stats.readings_acked += batch.count
        if self.on_acked is not None:
            self.on_acked(batch)
        self._pending_acks.append(batch)
        self._acked.set()

    async def _pump(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        tick = min(0.05, max(self.cfg.batch_max_age_s / 4, 0.005))
        resend = await loop.run_in_executor(self.executor, self.outbox.pending_batches)
        while not link.lost.is_set() and not self._stop.is_set():
            if self._pending_acks:
                acks, self._pending_acks = self._pending_acks, []
                await loop.run_in_executor(self.executor, self._ack_many, acks)
            progressed = False
            while len(self._inflight) < self.cfg.max_inflight_batches:
                if resend:
                    batch: Batch | None = resend.pop(0)
                else:
                    try:
                        batch = await loop.run_in_executor(self.executor, self._next_batch)
                    except SignerError as exc:
                        await self._signer_down(exc)
                        break
                    if self.stats.signer_down_since is not None:
                        log.info(
                            "signer_back",
                            down_s=round(time.time() - self.stats.signer_down_since, 1),
                        )
                        self.stats.signer_down_since = None
                        self._signer_backoff.reset()
                if batch is None:
                    break
                await self._announce_key(link)
                self._publish(link, batch)
                progressed = True
            if not progressed:
                self._acked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(self._acked.wait(), link.lost.wait(), self._stop.wait()), tick
                    )
        if self._pending_acks:
            acks, self._pending_acks = self._pending_acks, []
            await loop.run_in_executor(self.executor, self._ack_many, acks)

    async def _signer_down(self, exc: SignerError) -> None:
        """Nothing leaves unsigned: the readings wait in the outbox until the signer is back."""
        self.stats.signer_errors += 1
        if self.stats.signer_down_since is None:
            self.stats.signer_down_since = time.time()
            log.error("signer_unavailable", reason=exc.reason, error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self._signer_backoff.next_delay())

    def _ack_many(self, batches: list[Batch]) -> None:
        for b in batches:
            self.outbox.ack(b.seq)

    async def _announce_key(self, link: Link) -> None:
        """A batch sealed with another key than the last: run on_new_key first."""
        key_id = getattr(self._seal, "key_id", None)
        if key_id is None:
            return
        changed = self._key_seen is not None and key_id != self._key_seen
        self._key_seen = key_id
        if changed and self.on_new_key is not None:
            log.info("signing_key_changed", key_id=key_id.hex()[:16])
            await self.on_new_key(link)

    def _publish(self, link: Link, batch: Batch) -> None:
        kind = KINDS[Priority(batch.prio)]
        mid = link.publish(self.topic(kind), batch.payload, batch.id, signed=self._seal is not None)
        self._inflight[mid] = batch
        self.stats.batches_published += 1
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1

    # runs in the outbox thread -------------------------------------------------

    def _cut(self, prio: int, **bounds: int) -> Batch | None:
        return self.outbox.cut_batch(
            prio,
            self._encode,
            gateway_id=self.gateway_id,
            max_readings=self.cfg.batch_max_readings,
            max_bytes=self.cfg.batch_max_bytes,
            seal=self._seal,
            **bounds,
        )

    def _next_batch(self) -> Batch | None:
        for prio in (Priority.ALERT, Priority.EVENT):
            if self.outbox.waiting(prio):
                batch = self._cut(int(prio))
                if batch is not None:
                    return batch
        if not self.outbox.waiting(Priority.TELEMETRY):
            return None
        floor = self.outbox.live_floor(self.cfg.live_window_s)
        now = time.monotonic()
        live_due = (
            now - self._last_live_cut >= self.cfg.batch_max_age_s
            or self.outbox.waiting(Priority.TELEMETRY) >= self.cfg.batch_max_readings
        )
        share = self.cfg.backlog_share
        order = ("backlog", "live") if self._credit > 0 else ("live", "backlog")
        for which in order:
            if which == "live":
                if not live_due:
                    continue
                batch = self._cut(int(Priority.TELEMETRY), min_seq=floor)
                if batch is not None:
                    self._last_live_cut = now
                    self.stats.live_batches += 1
                    self._credit += share
                    return batch
            else:
                if share <= 0 and live_due:
                    continue
                batch = self._cut(int(Priority.TELEMETRY), max_seq=floor)
                if batch is not None:
                    self.stats.backlog_batches += 1
                    self._credit -= 1 - share
                    return batch
        return None


async def _first(*aws: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
