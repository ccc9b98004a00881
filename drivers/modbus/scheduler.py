"""One scheduler per Modbus bus: who is asked what, and when.

Every device has its own poll interval on the monotonic clock (a wall-clock
step changes nothing); a poll that falls behind skips the slots it missed
instead of bursting to catch up. A *job* is one attempt to poll one device:
its coalesced requests in turn, abandoned at the first failure. Workers take
the job that is due first; there is one worker on RTU (one request on the
wire; the transport keeps the inter-frame gap) and ``max_in_flight`` on TCP.

A failed attempt (timeout, a reply that does not match) is rescheduled as a
new job behind every job already due, so a dead or slow device delays its
neighbours by at most its own timeout per attempt (on RTU the retry also
waits out the unit's late-reply window, see :mod:`.client`, while the
other units are polled). After ``1 + retries``
consecutive failed attempts its points are reported bad (``timeout`` or
``bad_response``) and it is retried with exponential backoff and full jitter
until it answers again (``device_recovered``). Exception replies are
answers: the device is alive (no retry, no backoff, polled on its grid), but
those points are bad (``modbus_exception`` with the code) and the poll is
counted in the device's errors under ``modbus_exception`` with the code's
meaning in ``last_error``; its state is ``exception`` until a poll gets no
exception reply (``device_exception`` / ``device_exception_cleared`` in the
log). A poll counts in ``polls`` only if at least one request returned data.

Losing the transport (connection refused or closed, serial port gone)
stops the workers, reports every device's points bad (``unreachable``) and
reopens with backoff; polling restarts when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import ReadingSink, Source, supervise
from cityedge.drivers.modbus.client import (
    ModbusClient,
    ModbusDevice,
    ReplyMismatch,
    bad_readings,
    describe_exception,
)
from cityedge.drivers.modbus.codec import encode_point
from cityedge.drivers.modbus.plan import ReadRequest, plan_reads
from cityedge.drivers.modbus.stats import DeviceStats
from cityedge.errors import DeviceTimeout, TransientError
from cityedge.grid import cell_id
from cityedge.profiles import Point
from cityedge.readings import Reading
from cityedge.tasks import cancel_and_wait

MANUAL_QUEUE_MAX = 16  # read_now requests waiting; more are refused


def device_requests(
    config: DeviceConfig, points: Sequence[Point] | None = None
) -> list[ReadRequest]:
    """The coalesced reads of a device's profile (or of some of its points)."""
    prof = config.profile
    gap = prof.max_gap if config.max_gap is None else config.max_gap
    chosen = prof.points if points is None else points
    return plan_reads(chosen, prof.max_registers, prof.max_bits, gap, prof.unreadable)


@dataclass(eq=False)
class _Device:
    config: DeviceConfig
    target: ModbusDevice
    requests: list[ReadRequest]
    backoff: Backoff
    log: structlog.typing.FilteringBoundLogger
    slot: float = 0.0  # monotonic time of the poll slot being served
    failures: int = 0
    down: bool = False
    refusing: bool = False  # its last poll got an exception reply
    stats: DeviceStats = field(default_factory=DeviceStats)


@dataclass(eq=False)
class _Manual:
    device: _Device
    requests: list[ReadRequest]
    future: asyncio.Future[list[Reading]]


@dataclass
class _WriteJob:
    device: _Device
    point: Point
    words: list[int]
    future: asyncio.Future[None]


class ModbusBus(Source):
    """The :class:`~cityedge.drivers.base.Source` polling one Modbus bus."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[tuple[DeviceConfig, str]],
        *,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        summary_interval_s: float = 60.0,
        clock_ok: Callable[[], bool] | None = None,
    ) -> None:
        """``devices``: each device's config and grid cell."""
        self.bus = bus
        self.name = f"modbus:{bus.name}"
        self.client = ModbusClient(bus)
        self._log = structlog.get_logger().bind(bus=bus.name, driver="modbus")
        self._devices: dict[str, _Device] = {}
        for config, cell in devices:
            timeout = config.timeout_s if config.timeout_s is not None else bus.timeout_s
            self._devices[config.id] = _Device(
                config=config,
                target=ModbusDevice(config.id, config.unit_id, timeout, cell),
                requests=device_requests(config),
                backoff=Backoff(base_s=config.poll_interval_s, cap_s=config.backoff_max_s),
                log=self._log.bind(device=config.id, unit=config.unit_id),
            )
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self._answered = False  # has the peer answered a request since the last open?
        self._summary_interval_s = summary_interval_s
        self._clock_ok = clock_ok
        self._heap: list[tuple[float, int, _Device]] = []
        self._seq = itertools.count()
        self._manual: deque[_Manual | _WriteJob] = deque()
        self._wake = asyncio.Event()
        self._sink: ReadingSink | None = None
        self.connected = False
        self._opened = False  # the first open is not a reopen
        self.counters: dict[str, int] = {"requests": 0, "reopens": 0, "transport_errors": 0}

    @classmethod
    def from_config(
        cls,
        bus: BusConfig,
        devices: Sequence[DeviceConfig],
        site_lat: float,
        site_lon: float,
        cell_size_m: int,
        **kwargs: object,
    ) -> ModbusBus:
        """A bus with the devices of ``devices`` that are on it."""
        mine = []
        for d in devices:
            if d.bus != bus.name:
                continue
            lat = d.latitude if d.latitude is not None else site_lat
            lon = d.longitude if d.longitude is not None else site_lon
            mine.append((d, cell_id(lat, lon, cell_size_m)))
        return cls(bus, mine, **kwargs)  # type: ignore[arg-type]

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Poll until cancelled; never raises on device or transport faults."""
        self._sink = sink
        try:
            await supervise(self._session, self._reopen, self._on_lost)
        finally:
            self.connected = False
            self._sink = None
            await self.client.close()  # cancelled in the middle of opening: nothing left open
            for job in self._manual:
                if not job.future.done():
                    job.future.set_exception(TransientError("bus stopped"))
            self._manual.clear()

    async def _on_lost(self, reason: str) -> None:
        self.connected = False
        self.counters["transport_errors"] += 1
        await self._report_unreachable(reason)

    async def _session(self) -> str:
        """Open the transport and poll until it is lost; returns why."""
        try:
            await self.client.open()
        except TransientError as exc:
            self._log.warning("transport_open_failed", error=str(exc))
            return str(exc)
        if self._opened:
            self.counters["reopens"] += 1
        self._opened = True
        self.connected = True
        # The reopen backoff is reset by the first answer, not by the open: a peer that
        # accepts TCP and then hangs up (not a Modbus server) is retried ever more slowly.
        self._answered = False
        self._log.info("transport_opened", devices=len(self._devices))
        now = time.monotonic()
        self._heap = []
        for dev in self._devices.values():
            dev.slot = now
            self._push(dev, now)
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        workers = 1 if self.client.rtu else max(1, self.bus.max_in_flight)
        tasks = [asyncio.create_task(self._worker(lost)) for _ in range(workers)]
        tasks.append(asyncio.create_task(self._summaries()))
        try:
            return await lost
        finally:
            if not lost.done():
                lost.cancel()  # workers stop on it even if a cancel of theirs is lost
            try:
                await cancel_and_wait(tasks)
            finally:
                await self.client.close()

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_interval_s)
            polls = sum(d.stats.polls for d in self._devices.values())
            errors = sum(sum(d.stats.errors.values()) for d in self._devices.values())
            down = [d.config.id for d in self._devices.values() if d.down]
            self._log.info("bus_summary", polls=polls, errors=errors, down=down, **self.counters)

    def _push(self, dev: _Device, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), dev))
        self._wake.set()

    async def _next_job(self) -> _Device | _Manual | _WriteJob:
        while True:
            if self._manual:
                return self._manual.popleft()
            timeout = None
            if self._heap:
                timeout = self._heap[0][0] - time.monotonic()
                if timeout <= 0:
                    return heapq.heappop(self._heap)[2]
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _worker(self, lost: asyncio.Future[str]) -> None:
        while not lost.done():
            job = await self._next_job()
            try:
                if isinstance(job, _Manual):
                    await self._run_manual(job)
                elif isinstance(job, _WriteJob):
                    await self._run_write(job)
                else:
                    await self._poll(job)
            except TransientError as exc:
                if isinstance(job, _Device):
                    self._push(job, time.monotonic())
                if not lost.done():
                    lost.set_result(str(exc) or type(exc).__name__)
                return
            except Exception as exc:  # a bug: restart the session rather than die silently
                self._log.exception("worker_failed")
                if not lost.done():
                    lost.set_result(f"internal error: {exc!r}")
                return

    # -- one job -----------------------------------------------------------

    async def _read_all(
        self, dev: _Device, requests: Sequence[ReadRequest]
    ) -> tuple[list[Reading], list[tuple[ReadRequest, int | None]]]:
        """The readings of ``requests``, and those answered by an exception (with its code)."""
        readings: list[Reading] = []
        refused: list[tuple[ReadRequest, int | None]] = []
        errors_before = self.client.decode_errors
        for request in requests:
            self.counters["requests"] += 1
            dev.stats.requests += 1
            got = await self.client.read(dev.target, request)
            if got and got[0].reason == "modbus_exception":
                refused.append((request, got[0].code))
            readings.extend(got)
        dev.stats.decode_errors += self.client.decode_errors - errors_before
        return readings, refused

    async def _deliver(self, readings: list[Reading]) -> None:
        if self._clock_ok is not None and not self._clock_ok():
            readings = [dataclasses.replace(r, time_ok=False) for r in readings]
        if self._sink is not None and readings:
            await self._sink(readings)

    async def _poll(self, dev: _Device) -> None:
        started = time.monotonic()
        try:
            readings, refused = await self._read_all(dev, dev.requests)
        except DeviceTimeout as exc:
            await self._failed(dev, "timeout", str(exc))
            return
        except ReplyMismatch as exc:
            await self._failed(dev, "bad_response", str(exc))
            return
        if not self._answered:
            self._answered = True
            self._reopen.reset()
        now = time.monotonic()
        if refused and len(refused) == len(dev.requests):
            dev.stats.stalled()  # no data came back: no poll rate to show
        else:
            dev.stats.polled(now - started)
        self._count_refusals(dev, refused)
        await self._deliver(readings)
        if dev.down or dev.failures:
            if dev.down:
                dev.log.info("device_recovered", after_failures=dev.failures)
            dev.down, dev.failures = False, 0
            dev.backoff.reset()
        self._push(dev, self._next_slot(dev, now))

    def _count_refusals(self, dev: _Device, refused: list[tuple[ReadRequest, int | None]]) -> None:
        """Count a poll that got exception replies; log when that starts and when it ends."""
        if refused:
            codes = sorted({code or 0 for _, code in refused})
            what = ", ".join(describe_exception(c) for c in codes)
            if len(dev.requests) == 1:
                request = refused[0][0]
                where = f"reading {request.register} {request.start}..{request.end - 1}"
            else:
                where = f"to {len(refused)} of {len(dev.requests)} requests"
            dev.stats.failed("modbus_exception", f"{what} {where}")
            if not dev.refusing:
                dev.log.warning("device_exception", error=f"{what} {where}", codes=codes)
        elif dev.refusing:
            dev.log.info("device_exception_cleared")
        dev.refusing = bool(refused)

    def _next_slot(self, dev: _Device, now: float) -> float:
        """The next slot after ``now`` on the device's grid; missed ones are skipped."""
        interval = max(dev.config.poll_interval_s, 1e-3)
        steps = max(1, int((now - dev.slot) // interval) + 1)
        dev.stats.skipped_slots += steps - 1
        dev.slot += steps * interval
        return dev.slot

    async def _failed(self, dev: _Device, reason: str, detail: str) -> None:
        dev.failures += 1
        dev.stats.failed(reason, detail)
        now = time.monotonic()
        if not dev.down and dev.failures <= dev.config.retries:
            dev.log.info("poll_retry", reason=reason, attempt=dev.failures)
            self._push(dev, max(now, self.client.ready_at(dev.config.unit_id)))
            return
        if not dev.down:
            dev.log.warning(
                "device_unreachable", reason=reason, error=detail, failures=dev.failures
            )
        dev.down = True
        dev.stats.stalled()
        await self._deliver([r for q in dev.requests for r in bad_readings(dev.target, q, reason)])
        delay = dev.backoff.next_delay()
        dev.slot = max(now + delay, self.client.ready_at(dev.config.unit_id))
        self._push(dev, dev.slot)

    async def _report_unreachable(self, reason: str) -> None:
        self._log.warning("transport_lost", error=reason)
        for dev in self._devices.values():
            dev.stats.failed("unreachable", reason)
            dev.stats.stalled()
            if not dev.down:
                dev.down = True
                await self._deliver(
                    [r for q in dev.requests for r in bad_readings(dev.target, q, "unreachable")]
                )

    # -- on demand ---------------------------------------------------------

    async def read_now(
        self, device_id: str, point_names: Sequence[str] | None = None
    ) -> list[Reading]:
        """Read a device now, through the bus queue; returns readings, sinks nothing.

        Raises KeyError for an unknown device or point, TransientError when
        the bus is not running or too many reads are waiting.
        """
        dev = self._devices[device_id]
        profile = dev.config.profile
        points = None if point_names is None else [profile.point(n) for n in point_names]
        requests = device_requests(dev.config, points)
        if not self.connected:
            return [r for q in requests for r in bad_readings(dev.target, q, "unreachable")]
        if len(self._manual) >= MANUAL_QUEUE_MAX:
            raise TransientError(f"{MANUAL_QUEUE_MAX} reads already waiting")
        job = _Manual(dev, requests, asyncio.get_running_loop().create_future())
        self._manual.append(job)
        self._wake.set()
        return await job.future

    async def write_now(self, device_id: str, point_name: str, value: float | bool) -> None:
        """Write one point through the bus queue (never collides with polling on RTU).

        Raises KeyError (unknown device or point), EncodeError (read-only,
        out of range), TransientError (bus down), WriteRefused (the device said no).
        """
        dev = self._devices[device_id]
        point = dev.config.profile.point(point_name)
        words = encode_point(point, value)
        if not self.connected:
            raise TransientError(f"bus {self.bus.name} is not connected")
        if len(self._manual) >= MANUAL_QUEUE_MAX:
            raise TransientError(f"{MANUAL_QUEUE_MAX} requests already waiting")
        job = _WriteJob(dev, point, words, asyncio.get_running_loop().create_future())
        self._manual.append(job)
        self._wake.set()
        await job.future
        self._log.info("point_written", device=device_id, point=point_name, value=value)

    async def _run_write(self, job: _WriteJob) -> None:
        try:
            await self.client.write(job.device.target, job.point.register, job.point.address,
                                    job.words)  # fmt: skip
        except TransientError as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            raise
        except Exception as exc:  # refused, timeout: the caller hears why
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(None)

    async def _run_manual(self, job: _Manual) -> None:
        readings: list[Reading] = []
        try:
            for request in job.requests:
                try:
                    readings.extend((await self._read_all(job.device, [request]))[0])
                except DeviceTimeout:
                    readings.extend(bad_readings(job.device.target, request, "timeout"))
                except ReplyMismatch:
                    readings.extend(bad_readings(job.device.target, request, "bad_response"))
        except TransientError:
            done = {r.point for r in readings}
            for request in job.requests:
                bad = bad_readings(job.device.target, request, "unreachable")
                readings.extend(r for r in bad if r.point not in done)
            raise
        finally:
            if not job.future.done():
                job.future.set_result(readings)

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, object]:
        devices: dict[str, object] = {}
        for dev in self._devices.values():
            info = dev.stats.as_dict()
            info.update(
                unit_id=dev.config.unit_id,
                state=_state(dev),
                poll_interval_s=dev.config.poll_interval_s,
                requests_per_poll=len(dev.requests),
            )
            devices[dev.config.id] = info
        decode_errors = sum(d.stats.decode_errors for d in self._devices.values())
        return {
            "bus": self.bus.name,
            "type": self.bus.type,
            "connected": self.connected,
            **self.counters,
            "devices": devices,
            "rejected": {"undecodable_value": decode_errors} if decode_errors else {},
        }


def _state(dev: _Device) -> str:
    """``down``, ``retrying`` (after a failed attempt), ``exception`` (answers so), ``ok``."""
    if dev.down:
        return "down"
    if dev.failures:
        return "retrying"
    return "exception" if dev.refusing else "ok"
