"""The serial sensor source: one sensor on one serial line, its frames to readings.

Layers: :mod:`.transport` moves bytes (pyserial, read by the event loop),
the codec's framer (:mod:`.framing`) cuts them into frames and resyncs after
garbage, the codec (:mod:`.pms5003`, :mod:`.sds011`, :mod:`.nmea`,
:mod:`.generic`, each adapted to the driver by :mod:`.codecs`) turns a frame
into named values, and the profile's ``[[fields]]`` name them as points.
This module schedules the three.

What it does about faults, once per episode rather than once per frame:

* A rejected frame or run of garbage is counted by reason; the first of each
  reason in a summary window is logged (``frame_rejected``, with its first
  bytes), the rest in one ``frames_rejected`` line at the end of the window.
* No data frame for ``silence_s`` (bus option, default 10 s; in passive
  mode at least two poll intervals): every point turns bad (``silent``)
  once; the next good frame makes them good again (``sensor_recovered``).
* The port lost (unplugged adapter, ``EIO``), or not there to open: every
  point turns bad (``unreachable``) once, and the port is reopened with
  exponential backoff and full jitter.

Modes (device option ``sensor_mode``): without it the driver sends nothing
and listens (both particulate sensors talk by themselves from power-on).
``"passive"`` (PMS5003 passive mode, SDS011 query mode) sends the mode
command at every open and a read command every ``poll_interval_s``;
``"active"`` sends the active-mode command at open, for a sensor a previous
configuration left passive. NMEA receivers and generic sensors only listen.

An NMEA GPS also gives the gateway a position and a time reference:
:meth:`SerialSensorSource.latest_fix` (the last valid RMC fix) and the
``fix`` entry of :meth:`~SerialSensorSource.status`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import DecodeError, ReadingSink, Source, supervise
from cityedge.drivers.serial.codecs import Decoded, LatestFix, NmeaCodec, make_codec
from cityedge.drivers.serial.framing import Framer, Rejection
from cityedge.drivers.serial.transport import LineSettings, SerialTransport
from cityedge.errors import ConfigError, Problem, TransientError
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading, Value, format_ts, utc_now
from cityedge.tasks import cancel_and_wait

if TYPE_CHECKING:
    from cityedge.sources import SourceContext

DEFAULT_SILENCE_S = 10.0


class _RejectionLog:
    """Counts rejections; logs the first of each reason per window, then one summary line."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self._log = log
        self.total: Counter[str] = Counter()
        self._window: Counter[str] = Counter()

    def note(self, reason: str, size: int, head: bytes) -> None:
        self.total[reason] += 1
        if not self._window[reason]:
            self._log.warning("frame_rejected", reason=reason, size=size, head=head.hex())
        self._window[reason] += 1

    def flush(self) -> None:
        more = {reason: n - 1 for reason, n in self._window.items() if n > 1}
        if more:
            self._log.warning("frames_rejected", counts=more, total=dict(self.total))
        self._window.clear()


@dataclass(slots=True)
class _SensorStats:
    frames: int = 0
    ignored: int = 0
    unmapped: int = 0
    commands: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    last_frame: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def failed(self, reason: str, detail: str) -> None:
        self.errors[reason] += 1
        self.last_error = f"{reason}: {detail}" if detail else reason
        self.last_error_at = utc_now()


class SerialSensorSource(Source):
    """The :class:`~cityedge.drivers.base.Source` of one serial line with one sensor."""

    def __init__(
        self,
        bus: BusConfig,
        device: DeviceConfig,
        cell: str,
        *,
        clock_ok: Callable[[], bool] | None = None,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        summary_interval_s: float = 60.0,
    ) -> None:
        self.bus, self.device, self.cell = bus, device, cell
        self.name = f"serial:{bus.name}"
        self.codec = make_codec(device)
        self.transport = SerialTransport(LineSettings.from_bus(bus))
        self.fields: dict[str, FieldMap] = device.profile.field_by_key()
        self.mode: str | None = device.options.get("sensor_mode")
        silence = float(bus.options.get("silence_s", DEFAULT_SILENCE_S))
        if self.mode == "passive":
            silence = max(silence, 2 * device.poll_interval_s)
        self.silence_s = silence
        self.state = "connecting"
        self.connected = False
        self._opened = False  # the first open is not a reopen
        self.counters: dict[str, int] = {"reopens": 0, "transport_errors": 0}
        self.stats = _SensorStats()
        self._log = structlog.get_logger().bind(bus=bus.name, device=device.id, driver="serial")
        self._rejections = _RejectionLog(self._log)
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self._summary_interval_s = summary_interval_s
        self._clock_ok = clock_ok
        self._sink: ReadingSink | None = None
        self._framer: Framer = self.codec.framer()
        self._last_good = time.monotonic()

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Read until cancelled; never raises on sensor or port faults."""
        self._sink = sink
        try:
            await supervise(self._session, self._reopen, self._on_lost)
        finally:
            self.connected = False
            self._rejections.flush()
            await self.transport.close()
            self._sink = None

    async def _on_lost(self, reason: str) -> None:
        self.connected = False
        self.counters["transport_errors"] += 1
        await self._went_bad("unreachable", reason)

    async def _session(self) -> str:
        """Open the port and read until it is lost; returns why."""
        try:
            await self.transport.open()
        except TransientError as exc:
            self._log.warning("transport_open_failed", error=str(exc))
            return str(exc)
        if self._opened:
            self.counters["reopens"] += 1
        self._opened = True
        self.connected = True
        self._reopen.reset()
        self._framer = self.codec.framer()  # bytes torn before a reopen mean nothing
        self._last_good = time.monotonic()
        self._log.info("transport_opened", port=self.bus.device, mode=self.mode or "listen")
        tasks = [
            asyncio.create_task(self._pump(), name=f"{self.name}-pump"),
            asyncio.create_task(self._watchdog(), name=f"{self.name}-watchdog"),
            asyncio.create_task(self._commands(), name=f"{self.name}-commands"),
            asyncio.create_task(self._summaries(), name=f"{self.name}-summary"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            error = next(iter(done)).exception()
            if isinstance(error, TransientError):
                return str(error)
            self._log.error("session_failed", error=repr(error))  # a bug: reopen, do not die
            return f"internal error: {error!r}"
        finally:
            try:
                await cancel_and_wait(tasks)
            finally:
                await self.transport.close()

    async def _pump(self) -> None:
        while True:
            chunk = await self.transport.read()
            await self._deliver(self.feed(chunk, utc_now()))

    def feed(self, chunk: bytes, ts: datetime) -> list[Reading]:
        """Bytes from the port to readings; every bad frame counted and logged. Never raises."""
        readings: list[Reading] = []
        for item in self._framer.feed(chunk):
            if isinstance(item, Rejection):
                self._reject(item.reason, item.size, item.head)
            else:
                readings += self._frame(item.data, ts)
        return readings

    def _frame(self, data: bytes, ts: datetime) -> list[Reading]:
        try:
            decoded = self.codec.decode(data, ts)
        except DecodeError as exc:
            self._reject(exc.reason, len(data), data[:64])
            return []
        except Exception:  # a codec bug must cost one frame, not the line
            self._log.exception("codec_failed", head=data[:64].hex())
            self._reject("codec_error", len(data), data[:64])
            return []
        if decoded is None:
            self.stats.ignored += 1
            return []
        self.stats.frames += 1
        self.stats.last_frame = ts
        self._last_good = time.monotonic()
        if self.state != "ok":
            event = "sensor_talking" if self.state == "connecting" else "sensor_recovered"
            self._log.info(event, after=self.state)
            self.state = "ok"
        return self._readings(decoded, ts)

    def _reject(self, reason: str, size: int, head: bytes) -> None:
        self.stats.failed(reason, head[:16].hex())
        self._rejections.note(reason, size, head)

    def _readings(self, decoded: Decoded, ts: datetime) -> list[Reading]:
        out: list[Reading] = []
        for key, raw in decoded.values.items():
            field = self.fields.get(key)
            if field is None:
                self.stats.unmapped += 1
                continue
            if raw is None:
                out.append(self._bad(field, self.codec.empty_reason, ts))
                continue
            out.append(self._reading(field, field.engineering(raw), ts, decoded.meta))
        return out

    def _reading(
        self, field: FieldMap, value: Value, ts: datetime, meta: dict[str, Any]
    ) -> Reading:
        return Reading(
            device=self.device.id,
            point=field.name,
            value=value,
            unit=field.unit,
            ts=ts,
            family=field.family,
            cell=self.cell,
            meta=dict(meta),
        )

    def _bad(self, field: FieldMap, reason: str, ts: datetime) -> Reading:
        return dataclasses.replace(
            self._reading(field, None, ts, {}), quality=Quality.BAD, reason=reason
        )

    async def _deliver(self, readings: list[Reading]) -> None:
        if not readings or self._sink is None:
            return
        if self._clock_ok is not None and not self._clock_ok():
            readings = [dataclasses.replace(r, time_ok=False) for r in readings]
        await self._sink(readings)

    async def _went_bad(self, reason: str, detail: str) -> None:
        """Every point bad with ``reason``, once per episode."""
        if self.state == reason:
            return
        self.state = reason
        self.stats.failed(reason, detail)
        event = "sensor_silent" if reason == "silent" else "transport_lost"
        self._log.warning(event, error=detail)
        ts = utc_now()
        await self._deliver([self._bad(f, reason, ts) for f in self.device.profile.fields])

    async def _watchdog(self) -> None:
        while True:
            wait = self._last_good + self.silence_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.state != "silent":
                await self._went_bad("silent", f"no data frame for {self.silence_s:g} s")
            await asyncio.sleep(min(self.silence_s, 1.0))

    async def _commands(self) -> None:
        """Set the mode once per open; in passive mode ask for a frame every poll interval."""
        if self.mode is not None:
            command = self.codec.mode_command(self.mode == "passive")
            if command is not None:
                await self._send(command)
        read = self.codec.read_command()
        interval = max(self.device.poll_interval_s, 0.01)
        while self.mode == "passive" and read is not None:
            await self._send(read)
            await asyncio.sleep(interval)
        await asyncio.Future()  # nothing more to say; wait to be cancelled

    async def _send(self, command: bytes) -> None:
        await self.transport.write(command)
        self.stats.commands += 1

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_interval_s)
            self._rejections.flush()
            self._log.info(
                "sensor_summary",
                state=self.state,
                frames=self.stats.frames,
                rejected=sum(self._rejections.total.values()),
                ignored=self.stats.ignored,
                unmapped=self.stats.unmapped,
                overflow_bytes=self.transport.overflow_bytes,
            )

    # -- what the agent asks -------------------------------------------------

    def latest_fix(self) -> LatestFix | None:
        """The last valid GPS fix (NMEA sensors only; None until there is one)."""
        return self.codec.fix if isinstance(self.codec, NmeaCodec) else None

    def status(self) -> dict[str, object]:
        s = self.stats
        device: dict[str, object] = {
            "state": self.state,
            "codec": self.codec.name,
            "sensor_mode": self.mode or "listen",
            "frames": s.frames,
            "last_frame": format_ts(s.last_frame) if s.last_frame else None,
            "last_error": s.last_error,
            "last_error_at": format_ts(s.last_error_at) if s.last_error_at else None,
            "errors": dict(s.errors),
            "errors_total": sum(s.errors.values()),
            "ignored": s.ignored,
            "unmapped": s.unmapped,
            "commands": s.commands,
        }
        out: dict[str, object] = {
            "bus": self.bus.name,
            "type": self.bus.type,
            "port": self.bus.device,
            "connected": self.connected,
            **self.counters,
            "bytes_in": self.transport.bytes_in,
            "bytes_out": self.transport.bytes_out,
            "overflow_bytes": self.transport.overflow_bytes,
            "devices": {self.device.id: device},
            "rejected": dict(self._rejections.total),
        }
        if isinstance(self.codec, NmeaCodec):
            fix = self.codec.fix
            out["fix"] = fix.as_dict() if fix is not None else None
        return out


def build_source(
    bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext
) -> SerialSensorSource:
    """The source of one ``serial-sensor`` bus (see cityedge.sources): exactly one device."""
    if len(devices) != 1:
        ids = ", ".join(d.id for d in devices) or "none"
        line = devices[1].line if len(devices) > 1 else 0
        message = f"a serial-sensor line carries exactly one sensor (bus {bus.name}: {ids})"
        raise ConfigError([Problem("(config)", line, f"buses.{bus.name}", message)])
    (device,) = devices
    return SerialSensorSource(bus, device, ctx.cell_for(device), clock_ok=ctx.clock_ok)
