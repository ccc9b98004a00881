"""The BLE source: scan adverts, match tags by MAC, decode, de-duplicate, emit readings.

One :class:`BleSource` per ``ble`` bus. A scanner (bleak in production, any
:class:`~.scanner.ScannerFactory` in tests) feeds a bounded
:class:`~.scanner.AdvertQueue`; the pump takes adverts one at a time:

1. Unknown MAC: counted (``unknown_mac``), never logged per advert.
2. The device's payload (BTHome service data 0xFCD2 or Ruuvi manufacturer
   data 0x0499) missing from the advert: counted (``no_payload``), ignored;
   BlueZ also reports adverts that only changed RSSI or name.
3. Repeats are dropped (``duplicates``): the same bytes, or the same BTHome
   packet id / Ruuvi measurement sequence, as the last accepted advert of
   that tag within ``dedupe_s`` (default 10 s, measured from the last
   accepted advert, so an unchanging tag still reports every ``dedupe_s``).
   An encrypted BTHome packet identical to the last one accepted is a repeat
   whatever its age.
4. Decoding failures are rejections counted by the codec's reason
   (``bad_mic`` for a wrong bind key, ``truncated``, ``not_encrypted``...).
5. Encrypted BTHome: a counter not above the last accepted one is rejected
   (``replayed``). The last counter per MAC is persisted in
   ``<state_dir>/ble.json`` by :class:`~.counters.CounterStore` (TinyDB,
   written atomically and fsynced before the readings leave), so a restart
   does not reopen replays. A corrupt file is moved aside
   (``ble.json.corrupt``) and logged; protection then restarts from the
   next packet each tag sends.
6. Values map to points through the profile's ``[[fields]]``; values no
   field maps are counted (``unmapped``). RSSI goes in ``Reading.meta``.

Picking the payload and decoding it (steps 2 and 4) are the pure functions
of :mod:`.adverts`, scaling (step 6) is the profile's
:meth:`~cityedge.profiles.FieldMap.engineering`; the counter file of step 5
is :mod:`.counters`; this module holds the source that runs the steps.

No adapter (no D-Bus, no BlueZ, no ``hciN``): ``ble_adapter_missing`` is
logged once with what to do, every point of the bus's devices is reported
bad (``no_adapter``) once, and the scanner is retried with exponential
backoff and full jitter. Passive scanning that the OS cannot do falls back
to active (``passive_scan_unavailable``). If no advert at all arrives for
``silence_restart_s`` the scanner is restarted (an adapter unplugged while
scanning stops the adverts without an error).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import DecodeError, ReadingSink, Source, supervise
from cityedge.drivers.ble import bthome
from cityedge.drivers.ble.adverts import Decoded, decode_advert, payload_of
from cityedge.drivers.ble.counters import CounterStore
from cityedge.drivers.ble.scanner import (
    DEFAULT_QUEUE_SIZE,
    Advert,
    AdvertQueue,
    ScanMode,
    Scanner,
    ScannerFactory,
    ScanSettings,
    bleak_scanner,
    is_passive_unsupported,
)
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading, utc_now
from cityedge.sources import SourceContext
from cityedge.tasks import cancel_and_wait

DEFAULT_DEDUPE_S = 10.0
STATE_FILE = "ble.json"
NO_ADAPTER_HINT = (
    "BLE devices get no data: check that a Bluetooth adapter is present "
    "(bluetoothctl list), that bluetoothd runs (systemctl status bluetooth) and "
    "that the system D-Bus is reachable; the agent retries by itself"
)
PASSIVE_HINT = (
    "passive scanning needs BlueZ >= 5.56 started with --experimental and "
    "Linux >= 5.10; scanning actively instead (tags receive scan requests)"
)


@dataclass(eq=False)
class _Device:
    config: DeviceConfig
    mac: str
    codec: str
    bind_key: bytes | None
    fields: dict[str, FieldMap]
    cell: str
    log: Any
    state: str = "waiting"
    last_error: str | None = None
    frames: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rssi: int | None = None
    last_seen: datetime | None = None
    last_raw: bytes | None = None
    last_key: int | None = None
    last_mono: float = float("-inf")
    last_encrypted: bool = False


class BleSource(Source):
    """The :class:`~cityedge.drivers.base.Source` of one ``ble`` bus."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceConfig],
        ctx: SourceContext,
        *,
        scanner_factory: ScannerFactory = bleak_scanner,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reopen_min_s: float = 1.0,
        reopen_max_s: float = 300.0,
        silence_restart_s: float = 600.0,
        summary_interval_s: float = 60.0,
    ) -> None:
        self.bus = bus
        self.name = f"ble:{bus.name}"
        opts = bus.options
        self.adapter = str(opts.get("adapter", "hci0"))
        self.scan_mode: ScanMode = "active" if opts.get("scan_mode") == "active" else "passive"
        self.effective_mode: ScanMode | None = None
        self.dedupe_s = float(opts.get("dedupe_s", DEFAULT_DEDUPE_S))
        self._ctx = ctx
        self._factory = scanner_factory
        self._queue_size = queue_size
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self._silence_s = silence_restart_s
        self._summary_s = summary_interval_s
        self._log = structlog.get_logger().bind(bus=bus.name, driver="ble")
        self._devices: dict[str, _Device] = {}
        for config in devices:
            self._add_device(config)
        self._queue: AdvertQueue | None = None
        self._store: CounterStore | None = None
        self._sink: ReadingSink | None = None
        self._down = False
        self._warned_passive = False
        self._logged: set[tuple[str, str]] = set()  # (device, reason) logged this interval
        self.connected = False
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def _add_device(self, config: DeviceConfig) -> None:
        mac = str(config.options["mac"]).upper().replace("-", ":")
        key = config.options.get("bind_key")
        if mac in self._devices:
            other = self._devices[mac].config.id
            self._log.warning("duplicate_mac", device=config.id, mac=mac, kept=other)
            return
        self._devices[mac] = _Device(
            config=config,
            mac=mac,
            codec=config.profile.codec or "bthome",
            bind_key=bytes.fromhex(str(key)) if key else None,
            fields=config.profile.field_by_key(),
            cell=self._ctx.cell_for(config),
            log=self._log.bind(device=config.id, mac=mac),
        )

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Scan until cancelled; never raises on adapter or advert faults."""
        self._sink = sink
        self._queue = AdvertQueue(self._queue_size)
        self._store = CounterStore(self._ctx.state_dir / STATE_FILE, self._log)
        summaries = asyncio.create_task(self._summaries())
        try:
            await supervise(self._session, self._reopen, self._on_lost)
        finally:
            try:
                await cancel_and_wait([summaries])
            finally:
                self.connected = False
                self._sink = None
                self._store.close()

    async def _on_lost(self, failure: str) -> None:
        await self._report_down(failure)

    async def _session(self) -> str | None:
        """Scan until silence (None: restart at once) or a failure (its description)."""
        try:
            scanner = await self._start_scanner()
        except Exception as exc:  # bleak, dbus-fast and OS errors alike: retry later
            return describe_failure(exc)
        self.connected = True
        self._reopen.reset()
        self._log.info("scan_started", adapter=self.adapter, mode=self.effective_mode)
        if self._down:
            self._down = False
            self._log.info("ble_adapter_recovered", adapter=self.adapter)
            for dev in self._devices.values():
                dev.state = "waiting"
        try:
            await self._pump()
            self._log.info("scan_silent_restart", silent_s=self._silence_s)
            return None
        finally:
            self.connected = False
            await self._stop(scanner)

    async def _start_scanner(self) -> Scanner:
        if self.scan_mode == "passive":
            try:
                return await self._start("passive")
            except Exception as exc:
                if not is_passive_unsupported(exc):
                    raise
                level = "debug" if self._warned_passive else "warning"
                self._warned_passive = True
                getattr(self._log, level)(
                    "passive_scan_unavailable", error=str(exc), hint=PASSIVE_HINT
                )
        return await self._start("active")

    async def _start(self, mode: ScanMode) -> Scanner:
        assert self._queue is not None
        scanner = self._factory(ScanSettings(self.adapter, mode), self._queue.detection_callback)
        try:
            await scanner.start()
        except BaseException:
            await self._stop(scanner)
            raise
        self.effective_mode = mode
        return scanner

    async def _stop(self, scanner: Scanner) -> None:
        try:
            await scanner.stop()
        except Exception as exc:
            self._log.debug("scan_stop_failed", error=describe_failure(exc))

    async def _pump(self) -> None:
        """Handle adverts; return when none at all arrived for ``silence_restart_s``."""
        assert self._queue is not None
        while True:
            try:
                advert = await asyncio.wait_for(self._queue.get(), self._silence_s)
            except TimeoutError:
                return
            try:
                readings = self._handle(advert)
            except Exception:  # a bug must not stop the bus: count it, keep going
                self.rejected["internal_error"] += 1
                self._log.exception("advert_failed", mac=advert.mac)
                continue
            await self._deliver(readings)

    async def _deliver(self, readings: list[Reading]) -> None:
        if self._sink is not None and readings:
            await self._sink(readings)

    # -- one advert --------------------------------------------------------

    def _handle(self, advert: Advert) -> list[Reading]:
        self.counters["adverts"] += 1
        dev = self._devices.get(advert.mac)
        if dev is None:
            self.rejected["unknown_mac"] += 1
            return []
        raw = payload_of(dev.codec, advert)
        if raw is None:
            self.counters["no_payload"] += 1
            return []
        if self._repeat(dev, raw, None, advert.mono):
            return []
        try:
            decoded = decode_advert(dev.codec, raw, dev.mac, dev.bind_key)
        except DecodeError as exc:
            self._reject(dev, exc.reason, str(exc))
            return []
        if decoded.key is not None and self._repeat(dev, raw, decoded.key, advert.mono):
            return []
        if decoded.counter is not None and not self._fresh_counter(dev, decoded.counter):
            return []
        dev.last_raw, dev.last_key, dev.last_mono = raw, decoded.key, advert.mono
        dev.last_encrypted = decoded.counter is not None
        dev.frames += 1
        dev.state, dev.rssi, dev.last_seen = "ok", advert.rssi, advert.ts
        return self._readings(dev, decoded, advert)

    def _repeat(self, dev: _Device, raw: bytes, key: int | None, mono: float) -> bool:
        recent = mono - dev.last_mono < self.dedupe_s
        if key is None:
            same = raw == dev.last_raw and (recent or dev.last_encrypted)
        else:
            same = key == dev.last_key and recent
        if same:
            dev.duplicates += 1
            self.counters["duplicates"] += 1
        return same

    def _fresh_counter(self, dev: _Device, counter: int) -> bool:
        assert self._store is not None
        last = self._store.get(dev.mac)
        if bthome.is_replay(counter, last):
            self._reject(dev, "replayed", f"counter {counter} not above {last}")
            return False
        self._store.set(dev.mac, counter)
        return True

    def _reject(self, dev: _Device, reason: str, detail: str) -> None:
        """Count a rejection; log it once per device and reason per summary interval."""
        self.rejected[reason] += 1
        dev.errors[reason] += 1
        dev.last_error = reason
        if dev.state == "ok" or dev.state == "waiting":
            dev.state = "rejecting"
        if (dev.config.id, reason) not in self._logged:
            self._logged.add((dev.config.id, reason))
            dev.log.warning("advert_rejected", reason=reason, error=detail)

    def _readings(self, dev: _Device, decoded: Decoded, advert: Advert) -> list[Reading]:
        time_ok = self._ctx.clock_ok() if self._ctx.clock_ok else True
        meta: dict[str, Any] = {"rssi": advert.rssi}
        if decoded.key is not None:
            meta["sequence" if dev.codec == "ruuvi" else "packet_id"] = decoded.key
        if decoded.counter is not None:
            meta["counter"] = decoded.counter
        out: list[Reading] = []
        for key, value in decoded.values.items():
            fm = dev.fields.get(key)
            if fm is None:
                self.rejected["unmapped"] += 1
                continue
            if value is None and dev.codec == "bthome":
                continue  # a "no event" button or dimmer object: nothing happened
            unit = fm.unit or decoded.units.get(key, "")
            quality, reason = (Quality.BAD, "not_available") if value is None else (
                Quality.GOOD, None)  # fmt: skip
            out.append(
                Reading(
                    device=dev.config.id,
                    point=fm.name,
                    value=fm.engineering(value),
                    unit=unit,
                    ts=advert.ts,
                    quality=quality,
                    family=fm.family,
                    cell=dev.cell,
                    reason=reason,
                    time_ok=time_ok,
                    meta=dict(meta),
                )
            )
        return out

    # -- adapter faults ----------------------------------------------------

    async def _report_down(self, failure: str) -> None:
        """First failure of an outage: log what to do and report every point bad, once."""
        self.counters["scan_failures"] += 1
        if self._down:
            self._log.info("ble_adapter_retry_failed", adapter=self.adapter, error=failure)
            return
        self._down = True
        ids = [d.config.id for d in self._devices.values()]
        self._log.error(
            "ble_adapter_missing", adapter=self.adapter, error=failure, devices=ids,
            hint=NO_ADAPTER_HINT,
        )  # fmt: skip
        ts = utc_now()
        time_ok = self._ctx.clock_ok() if self._ctx.clock_ok else True
        bad: list[Reading] = []
        for dev in self._devices.values():
            dev.state, dev.last_error = "no_adapter", failure
            dev.errors["no_adapter"] += 1
            for fm in dev.config.profile.fields:
                bad.append(
                    Reading(
                        device=dev.config.id, point=fm.name, value=None, unit=fm.unit, ts=ts,
                        quality=Quality.BAD, family=fm.family, cell=dev.cell,
                        reason="no_adapter", time_ok=time_ok,
                    )
                )  # fmt: skip
        await self._deliver(bad)

    # -- reporting ---------------------------------------------------------

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_s)
            self._logged.clear()
            frames = sum(d.frames for d in self._devices.values())
            self._log.info(
                "ble_summary", frames=frames, connected=self.connected,
                rejected=dict(self.rejected), queue_dropped=self._dropped(), **self.counters,
            )  # fmt: skip

    def _dropped(self) -> int:
        return self._queue.dropped if self._queue is not None else 0

    def status(self) -> dict[str, object]:
        devices: dict[str, object] = {}
        for dev in self._devices.values():
            devices[dev.config.id] = {
                "state": dev.state,
                "last_error": dev.last_error,
                "frames": dev.frames,
                "errors_total": sum(dev.errors.values()),
                "errors": dict(dev.errors),
                "duplicates": dev.duplicates,
                "mac": dev.mac,
                "codec": dev.codec,
                "rssi": dev.rssi,
                "last_seen": dev.last_seen.isoformat() if dev.last_seen else None,
            }
        rejected = dict(self.rejected)
        if self._dropped():
            rejected["queue_overflow"] = self._dropped()
        queue = self._queue
        return {
            "bus": self.bus.name,
            "type": self.bus.type,
            "connected": self.connected,
            "adapter": self.adapter,
            "scan_mode": self.scan_mode,
            "scan_mode_in_use": self.effective_mode,
            "devices": devices,
            "rejected": rejected,
            "queue": {
                "size": queue.qsize() if queue else 0,
                "max": self._queue_size,
                "dropped": self._dropped(),
            },
            **self.counters,
        }


def describe_failure(exc: BaseException) -> str:
    """A scanner start failure, in words a technician can act on."""
    if isinstance(exc, OSError):
        return f"system D-Bus not reachable ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def build_source(
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    ctx: SourceContext,
    *,
    scanner_factory: ScannerFactory | None = None,
    **kwargs: Any,
) -> BleSource:
    """The source of a ``ble`` bus (``cityedge.sources.FACTORIES``)."""
    if "silence_restart_s" in bus.options and "silence_restart_s" not in kwargs:
        kwargs["silence_restart_s"] = float(bus.options["silence_restart_s"])
    return BleSource(bus, devices, ctx, scanner_factory=scanner_factory or bleak_scanner, **kwargs)
