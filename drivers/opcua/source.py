"""One source per OPC UA bus: subscriptions by default, polling as fallback.

A *session* is one connection to the server: open the client (security,
trust check, user), resolve every field's node (browse paths are
translated once per session), then either

* **subscribe**: one subscription at the bus's ``publishing_interval_ms``
  with one monitored item per field (its ``sampling_interval_ms``, a queue
  deep enough for the samples of one publishing interval, its deadband
  filter); asyncua's publish loop hands each notification to a bounded
  queue and the pump turns them into readings; or
* **poll**: one Read of the Value of all a device's nodes per
  ``poll_interval_s`` of the device, on the monotonic clock, skipping slots
  it missed. Used when ``mode = "poll"`` or when the server refuses the
  subscription (counted ``subscription_refused``).

A session ends when asyncua's watchdog (a ServerStatus read every second,
and the socket itself) reports the connection lost, when the subscription's
status turns bad, or when a read fails in transport. Then every device's
points are reported bad once (``unreachable``), the source backs off with
full jitter and opens a new session, which subscribes again by itself.

The notification queue holds at most ``queue_max`` notifications; when it
is full the *oldest* is dropped (the newest value of a point is worth more
than an old one) and counted as ``queue_overflow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import DecodeError, ReadingSink, Source, supervise
from cityedge.drivers.opcua.certs import UntrustedServer
from cityedge.drivers.opcua.client import (
    TRANSPORT_ERRORS,
    SecurityMismatch,
    Settings,
    close_client,
    describe_error,
    open_client,
    resolve,
)
from cityedge.drivers.opcua.codec import (
    NO_VALUE,
    StatusInfo,
    encode_write,
    engineering_value,
    monitoring_filter,
    quality_of,
    sampling_interval_ms,
    status_name,
)
from cityedge.errors import TransientError
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading, Value, format_ts, utc_now
from cityedge.tasks import cancel_and_wait

CLOSE_WITHIN_S = 2.0  # a polite CloseSession; past it the socket is just dropped
QUEUE_MAX = 10_000  # notifications waiting for the pump
BATCH_MAX = 1_000  # readings handed to the sink at once
ITEM_QUEUE_MAX = 100  # server-side queue of one monitored item


class WriteRefused(Exception):
    """The server answered a write with a bad status code."""

    def __init__(self, code: int, point: str) -> None:
        self.code = code
        self.status = status_name(code)
        super().__init__(f"server refused the write of {point!r}: {self.status} (0x{code:08X})")


@dataclass(eq=False)
class _Point:
    device: _Device
    field: FieldMap
    handle: int  # the monitored item's client handle, stable across sessions
    node: ua.NodeId | None = None
    status: int = 0  # why node is None
    empty: bool = False  # its last value was no_value (logged once, when it starts)


@dataclass(eq=False)
class _Device:
    config: DeviceConfig
    cell: str
    log: structlog.typing.FilteringBoundLogger
    points: list[_Point] = field(default_factory=list)
    down: bool = False
    frames: int = 0
    polls: int = 0
    slot: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_value: datetime | None = None

    def failed(self, reason: str, detail: str = "") -> None:
        self.errors[reason] += 1
        self.last_error = f"{reason}: {detail}" if detail else reason


class OpcUaSource(Source):
    """The :class:`~cityedge.drivers.base.Source` of one OPC UA server."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[tuple[DeviceConfig, str]],
        settings: Settings,
        *,
        clock_ok: Callable[[], bool] | None = None,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        queue_max: int = QUEUE_MAX,
        summary_interval_s: float = 60.0,
    ) -> None:
        """``devices``: each device's config and grid cell."""
        self.bus = bus
        self.name = f"opcua:{bus.name}"
        self.settings = settings
        self.mode = str(bus.options.get("mode", "subscribe"))
        self.publishing_ms = float(bus.options.get("publishing_interval_ms", 1000.0))
        self._log = structlog.get_logger().bind(bus=bus.name, driver="opcua")
        self._devices: dict[str, _Device] = {}
        self._handles: dict[int, _Point] = {}
        handles = itertools.count(1)
        for config, cell in devices:
            dev = _Device(config, cell, self._log.bind(device=config.id))
            for fm in config.profile.fields:
                point = _Point(dev, fm, next(handles))
                dev.points.append(point)
                self._handles[point.handle] = point
            self._devices[config.id] = dev
        self._clock_ok = clock_ok
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self._summary_interval_s = summary_interval_s
        self._queue: asyncio.Queue[tuple[int, ua.DataValue]] = asyncio.Queue(queue_max)
        self._sink: ReadingSink | None = None
        self._client: Client | None = None
        self._lost: asyncio.Future[str] | None = None
        self.connected = False
        self.active_mode: str | None = None
        self.rejected: Counter[str] = Counter()
        self.counters: dict[str, int] = {
            "sessions": 0,
            "transport_errors": 0,
            "subscription_refused": 0,
            "notifications": 0,
            "writes": 0,
        }

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Read the server until cancelled; never raises on device or transport faults."""
        self._sink = sink
        try:
            await supervise(self._session, self._reopen, self._on_lost)
        finally:
            self.connected = False
            self._sink = None

    async def _on_lost(self, reason: str) -> None:
        self.counters["transport_errors"] += 1
        await self._report_unreachable(reason)

    async def _session(self) -> str:
        """One connection, from open to loss; returns why it ended."""
        try:
            client = await open_client(self.settings)
        except UntrustedServer as exc:
            return self._refused("untrusted_server", exc)
        except SecurityMismatch as exc:
            return self._refused("security_mismatch", exc)
        except TransientError as exc:
            self._log.warning("transport_open_failed", error=str(exc))
            return str(exc)
        except Exception as exc:  # a certificate file that does not parse, a bug
            self._log.exception("session_open_failed")
            return f"cannot open session: {exc!r}"
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._lost = lost

        async def connection_lost(exc: Exception) -> None:
            self._lose(f"connection lost: {describe_error(exc)}")

        client.connection_lost_callback = connection_lost
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._resolve(client)
            if self.mode == "subscribe" and await self._subscribe(client):
                self.active_mode = "subscribe"
                tasks.append(self._guarded(self._pump()))
            else:
                self.active_mode = "poll"
                now = time.monotonic()
                for dev in self._devices.values():
                    dev.slot = now
                    tasks.append(self._guarded(self._poller(client, dev)))
            tasks.append(self._guarded(self._summaries()))
            self._client = client
            self.connected = True
            self.counters["sessions"] += 1
            self._reopen.reset()
            self._log.info("session_opened", mode=self.active_mode, endpoint=self.settings.endpoint,
                           security=f"{self.settings.policy}/{self.settings.mode}")  # fmt: skip
            await self._report_unresolved()
            return await lost
        except TRANSPORT_ERRORS as exc:
            return describe_error(exc)
        finally:
            self._client, self._lost, self.connected = None, None, False
            try:
                await cancel_and_wait(tasks)
            finally:
                while not self._queue.empty():  # stale values of the lost session
                    self._queue.get_nowait()
                # Bounded below the agent's repeat of its cancel (cityedge.tasks).
                await close_client(client, min(self.settings.timeout_s, CLOSE_WITHIN_S))

    def _refused(self, reason: str, exc: Exception) -> str:
        self.rejected[reason] += 1
        self._log.error(reason, error=str(exc))
        return str(exc)

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _guarded(self, coro: object) -> asyncio.Task[None]:
        async def guard() -> None:
            try:
                await coro  # type: ignore[misc]
            except TRANSPORT_ERRORS as exc:
                self._lose(describe_error(exc))
            except Exception as exc:  # a bug: restart the session rather than die silently
                self._log.exception("task_failed")
                self._lose(f"internal error: {exc!r}")

        return asyncio.create_task(guard())

    async def _resolve(self, client: Client) -> None:
        points = list(self._handles.values())
        found = await resolve(client, sorted({p.field.key for p in points}))
        for point in points:
            where = found[point.field.key]
            point.node, point.status = where.node, where.status

    async def _report_unresolved(self) -> None:
        readings: list[Reading] = []
        for point in self._handles.values():
            if point.node is None:
                reason = status_name(point.status)
                point.device.failed("unresolved", f"{point.field.key}: {reason}")
                point.device.log.warning("point_unresolved", point=point.field.name,
                                         key=point.field.key, status=reason)  # fmt: skip
                readings.append(self._bad(point, reason, point.status))
        await self._deliver(readings)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_interval_s)
            down = [d.config.id for d in self._devices.values() if d.down]
            self._log.info("bus_summary", down=down, rejected=dict(self.rejected), **self.counters)

    # -- subscriptions -----------------------------------------------------

    async def _subscribe(self, client: Client) -> bool:
        """Subscribe every resolved point; False if the server refuses subscriptions."""
        publishing = self.publishing_ms
        keepalive = max(1, math.ceil(5000 / publishing))  # a keep-alive at least every 5 s
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing,
            RequestedLifetimeCount=keepalive * 10,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        try:
            result = await client.uaclient.create_subscription(params, self._on_publish)
        except UaStatusCodeError as exc:
            return self._subscription_refused(exc)
        points = [p for p in self._handles.values() if p.node is not None]
        request = ua.CreateMonitoredItemsParameters(
            SubscriptionId=result.SubscriptionId,
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            ItemsToCreate=[self._item(p) for p in points],
        )
        try:
            created = await client.uaclient.create_monitored_items(request)
        except UaStatusCodeError as exc:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await client.uaclient.delete_subscriptions([result.SubscriptionId])
            return self._subscription_refused(exc)
        for point, item in zip(points, created, strict=True):
            if not item.StatusCode.is_good():
                point.node, point.status = None, item.StatusCode.value
        return True

    def _subscription_refused(self, exc: UaStatusCodeError) -> bool:
        self.counters["subscription_refused"] += 1
        self._log.warning("subscription_refused", status=describe_error(exc), fallback="poll")
        return False

    def _item(self, point: _Point) -> ua.MonitoredItemCreateRequest:
        sampling = sampling_interval_ms(point.field, self.publishing_ms)
        depth = 1 if sampling <= 0 else math.ceil(self.publishing_ms / sampling)
        params = ua.MonitoringParameters(
            ClientHandle=point.handle,
            SamplingInterval=sampling,
            QueueSize=max(1, min(ITEM_QUEUE_MAX, depth)),
            DiscardOldest=True,
        )
        flt = monitoring_filter(point.field)
        if flt is not None:
            params.Filter = flt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=point.node, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=params,
        )

    def _on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish loop calls this; it only queues (same event loop)."""
        for notif in result.NotificationMessage.NotificationData or ():
            if isinstance(notif, ua.DataChangeNotification):
                for item in notif.MonitoredItems:
                    self._enqueue(item.ClientHandle, item.Value)
            elif isinstance(notif, ua.StatusChangeNotification):
                if not notif.Status.is_good():
                    self._lose(f"subscription status {notif.Status.name}")
            else:
                self.rejected["unexpected_notification"] += 1

    def _enqueue(self, handle: int, value: ua.DataValue) -> None:
        try:
            self._queue.put_nowait((handle, value))
        except asyncio.QueueFull:
            self._queue.get_nowait()  # drop the oldest
            self._queue.put_nowait((handle, value))
            self.rejected["queue_overflow"] += 1
            if self.rejected["queue_overflow"] % 1000 == 1:
                self._log.warning("queue_overflow", dropped=self.rejected["queue_overflow"])

    async def _pump(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH_MAX and not queue.empty():
                batch.append(queue.get_nowait())
            readings: list[Reading] = []
            for handle, value in batch:
                point = self._handles.get(handle)
                if point is None:
                    self._reject("unmapped", f"client handle {handle}")
                    continue
                point.device.frames += 1
                reading = self._reading(point, value)
                if reading is not None:
                    readings.append(reading)
            self.counters["notifications"] += len(batch)
            await self._deliver(readings)

    # -- polling -----------------------------------------------------------

    async def _poller(self, client: Client, dev: _Device) -> None:
        interval = max(dev.config.poll_interval_s, 1e-3)
        while True:
            points = [p for p in dev.points if p.node is not None]
            if points:
                await self._poll(client, dev, points)
            now = time.monotonic()
            dev.slot += max(1, int((now - dev.slot) // interval) + 1) * interval
            await asyncio.sleep(dev.slot - now)

    async def _poll(self, client: Client, dev: _Device, points: list[_Point]) -> None:
        nodes = [p.node for p in points if p.node is not None]
        try:
            values = await client.uaclient.read_attributes(nodes, AttributeIds.Value)
        except UaStatusCodeError as exc:  # a service fault: the server answered
            dev.failed("read_refused", describe_error(exc))
            await self._deliver([self._bad(p, status_name(exc.code), exc.code) for p in points])
            return
        dev.polls += 1
        readings = [r for p, v in zip(points, values, strict=True) if (r := self._reading(p, v))]
        await self._deliver(readings)

    # -- readings ----------------------------------------------------------

    def _reading(self, point: _Point, dv: ua.DataValue) -> Reading | None:
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        info = quality_of(status)
        value: Value = None
        if info.quality is Quality.BAD:
            point.device.failed("bad_status", f"{point.field.name}: {info.reason}")
        else:
            variant = dv.Value
            raw = variant.Value if variant is not None else None
            try:
                value = engineering_value(
                    point.field, raw, variant.VariantType if variant else None
                )
            except DecodeError as exc:
                point.device.failed(exc.reason, str(exc))
                if exc.reason != NO_VALUE:
                    self._reject(exc.reason, str(exc), point.device)
                    return None
                # Good (or Uncertain) and nothing with it: a value of null is only ever bad.
                info = StatusInfo(Quality.BAD, NO_VALUE, None)
            self._note_empty(point, info.reason == NO_VALUE)
        ts = dv.SourceTimestamp or dv.ServerTimestamp or utc_now()
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        point.device.last_value = ts
        fm = point.field
        return Reading(point.device.config.id, fm.name, value, fm.unit, ts, info.quality,
                       fm.family, point.device.cell, info.reason, info.code)  # fmt: skip

    def _note_empty(self, point: _Point, empty: bool) -> None:
        """Log when a point starts and stops coming without a value (once, not per sample)."""
        if empty and not point.empty:
            point.device.log.warning("point_without_value", point=point.field.name,
                                     key=point.field.key, reason=NO_VALUE)  # fmt: skip
        elif point.empty and not empty:
            point.device.log.info("point_value_back", point=point.field.name)
        point.empty = empty

    def _bad(self, point: _Point, reason: str, code: int | None = None) -> Reading:
        fm = point.field
        return Reading(point.device.config.id, fm.name, None, fm.unit, utc_now(), Quality.BAD,
                       fm.family, point.device.cell, reason, code)  # fmt: skip

    def _reject(self, reason: str, detail: str, dev: _Device | None = None) -> None:
        self.rejected[reason] += 1
        (dev.log if dev else self._log).warning("value_rejected", reason=reason, detail=detail)

    async def _deliver(self, readings: list[Reading]) -> None:
        if not readings:
            return
        if self._clock_ok is not None and not self._clock_ok():
            readings = [dataclasses.replace(r, time_ok=False) for r in readings]
        for dev_id in {r.device for r in readings if r.reason != "unreachable"}:
            dev = self._devices[dev_id]
            if dev.down:
                dev.down = False
                dev.log.info("device_recovered")
        if self._sink is not None:
            await self._sink(readings)

    async def _report_unreachable(self, reason: str) -> None:
        self._log.warning("transport_lost", error=reason)
        readings: list[Reading] = []
        for dev in self._devices.values():
            dev.failed("unreachable", reason)
            if not dev.down:
                dev.down = True
                readings.extend(self._bad(p, "unreachable") for p in dev.points)
        await self._deliver(readings)

    # -- writes ------------------------------------------------------------

    async def write(self, device_id: str, point_name: str, value: Value) -> None:
        """Write an engineering value to a writable point.

        Raises ValueError (unknown device or point, read-only point, value
        outside the write range or not of the field's ``data_type``),
        TransientError (not connected, transport failure) or WriteRefused
        (the server answered with a bad status).
        """
        dev = self._devices.get(device_id)
        if dev is None:
            raise ValueError(f"no device {device_id!r} on OPC UA bus {self.bus.name!r}")
        point = next((p for p in dev.points if p.field.name == point_name), None)
        if point is None:
            raise ValueError(f"device {device_id!r} has no point {point_name!r}")
        variant = encode_write(point.field, value)
        client = self._client
        if client is None:
            raise TransientError(f"OPC UA bus {self.bus.name!r} is not connected")
        if point.node is None:
            why = status_name(point.status)
            raise ValueError(
                f"point {point_name!r} ({point.field.key}) is not on the server: {why}"
            )
        try:
            results = await client.uaclient.write_attributes(
                [point.node], [ua.DataValue(variant)], AttributeIds.Value
            )
        except TRANSPORT_ERRORS as exc:
            raise TransientError(f"write of {point_name!r} failed: {describe_error(exc)}") from exc
        self.counters["writes"] += 1
        if not results[0].is_good():
            dev.failed("write_refused", results[0].name)
            raise WriteRefused(results[0].value, point_name)
        dev.log.info("point_written", point=point_name, value=value)

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, object]:
        devices: dict[str, object] = {}
        polling = "poll" in (self.mode, self.active_mode)  # configured, or the fallback
        for dev in self._devices.values():
            unresolved = [p.field.name for p in dev.points if p.node is None and self.connected]
            info: dict[str, object] = {
                "state": "down" if dev.down else ("ok" if self.connected else "connecting"),
                "last_error": dev.last_error,
                "frames": dev.frames,
                "polls": dev.polls,
                "errors": dict(dev.errors),
                "errors_total": sum(dev.errors.values()),
                "last_value": format_ts(dev.last_value) if dev.last_value else None,
                "points": len(dev.points),
                "unresolved": unresolved,
            }
            if polling:  # a polled device: health expects a poll per interval
                info["poll_interval_s"] = dev.config.poll_interval_s
            devices[dev.config.id] = info
        return {
            "bus": self.bus.name,
            "type": self.bus.type,
            "connected": self.connected,
            "endpoint": self.settings.endpoint,
            "security": f"{self.settings.policy}/{self.settings.mode}",
            "mode": self.active_mode,
            **self.counters,
            "queued": self._queue.qsize(),
            "devices": devices,
            "rejected": dict(self.rejected),
        }
