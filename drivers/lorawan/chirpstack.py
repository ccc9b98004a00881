"""LoRaWAN through an existing ChirpStack v4 network server (bus ``chirpstack-mqtt``).

Cities that already run ChirpStack keep it: this source subscribes to its
MQTT integration (``application/+/device/+/event/up`` by default) and takes
each uplink event's decoded ``object`` (set when the device profile has a
codec). Event JSON follows the Protobuf JSON mapping of ChirpStack's
``integration.UplinkEvent``: ``deviceInfo.devEui``, ``fCnt``, ``fPort``,
``time``, ``rxInfo[].gatewayId/rssi/snr``, ``txInfo.frequency``.

Devices are matched by DevEUI. ``object`` keys map through the profile's
``[[fields]]``, nested ones joined with dots (``{"a": {"b": 1}}`` is key
``a.b``); a key no field maps is counted as ``unmapped``. The decoder is
ChirpStack's, so its output is checked as any other input: a value that is
not a finite number (text, a boolean, null, ``1e400``) becomes a bad reading
with a reason (:mod:`.values`), counted and logged; radio metadata of the
wrong type (``fCnt: "twelve"``) is left out of ``meta``, counted as
``bad_meta``. ChirpStack has already deduplicated and checked the frame; an
event delivered twice (same ``deduplicationId``, e.g. an MQTT redelivery) is
kept once.

paho runs its network loop in its own thread; its callbacks only hand the
message to a bounded queue (``QUEUE_MAX``; when full the newest event is
dropped and counted as ``queue_full``). A lost broker connection is retried
with full-jitter backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import ReadingSink, Source, newly_unreachable, supervise
from cityedge.drivers.lorawan.ratelimit import LogLimiter
from cityedge.drivers.lorawan.values import describe, engineering, finite_or_none, uint_or_none
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading, utc_now
from cityedge.sources import SourceContext
from cityedge.tasks import cancel_and_wait

QUEUE_MAX = 1024
SEEN_MAX = 1024  # deduplicationIds remembered
DEFAULT_TOPIC = "application/+/device/+/event/up"
_FRACTION = re.compile(r"(\.\d{6})\d+")


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, leaf)`` pairs of a decoded object; lists index as ``a.0``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from flatten(value, f"{prefix}{i}.")
    else:
        yield prefix[:-1], obj


def event_time(text: Any) -> datetime | None:
    """An event's RFC 3339 time (nanoseconds cut to microseconds), or None."""
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    return ts.astimezone(UTC) if ts.tzinfo else None


def _radio_meta(event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``meta`` of an event's readings, and what was left out of it (wrong types)."""
    rx = [r for r in event.get("rxInfo") or [] if isinstance(r, dict)]
    best = max(rx, key=lambda r: (_num(r.get("rssi")), _num(r.get("snr"))), default={})
    meta: dict[str, Any] = {
        "rssi": finite_or_none(best.get("rssi")),
        "snr": finite_or_none(best.get("snr")),
        "gateway": _text(best.get("gatewayId")),
        "gateways": len(rx),
        "dev_addr": _text(event.get("devAddr")),
    }
    dropped: list[str] = []
    # proto3 JSON leaves out zero values: an absent fCnt or fPort is 0.
    for name, key, top in (("fcnt", "fCnt", 0xFFFFFFFF), ("fport", "fPort", 255)):
        value = uint_or_none(event.get(key, 0), top)
        if value is None:
            dropped.append(f"{key} {describe(event.get(key))} is not an integer 0..{top}")
        else:
            meta[name] = value
    tx = event.get("txInfo")
    freq = finite_or_none(tx.get("frequency")) if isinstance(tx, dict) else None
    if freq is not None:
        meta["freq"] = freq / 1e6
    return meta, dropped


def _num(value: Any) -> float:
    number = finite_or_none(value)
    return -1e9 if number is None else float(number)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclasses.dataclass(eq=False)
class _Device:
    config: DeviceConfig
    cell: str
    fields: dict[str, FieldMap]
    down: bool = False  # bad readings sent for the current broker outage
    stats: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"frames": 0, "errors_total": 0, "last_error": None, "unmapped": 0}
    )


class ChirpStackSource(Source):
    """Uplink events of a ChirpStack MQTT integration, as readings."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[tuple[DeviceConfig, str]],
        *,
        clock_ok: Callable[[], bool] | None = None,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        client_id: str | None = None,
    ) -> None:
        opts = bus.options
        # A fixed client id and a persistent session: uplinks the network server
        # publishes while this gateway reconnects wait at the broker (QoS 1).
        self.client_id = client_id or f"cityedge-{bus.name}"
        self.bus = bus
        self.name = f"chirpstack:{bus.name}"
        self.broker = str(opts.get("broker", "127.0.0.1"))
        self.port = int(opts.get("port", 1883))
        self.topic = str(opts.get("topic", DEFAULT_TOPIC))
        self._options = opts
        self._clock_ok = clock_ok
        self._log = structlog.get_logger().bind(bus=bus.name, driver="chirpstack")
        self._devices: dict[str, _Device] = {}
        for config, cell in devices:
            eui = str(config.options["dev_eui"]).lower()
            self._devices[eui] = _Device(config, cell, config.profile.field_by_key())
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MAX)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self.connected = False
        self._sink: ReadingSink | None = None
        self.rejected: dict[str, int] = {}
        self._limiter = LogLimiter()
        self.counters = {"events": 0, "readings": 0, "duplicates": 0, "reconnects": 0}

    def _reject(
        self,
        reason: str,
        detail: str = "",
        dev: _Device | None = None,
        what: str = "event",
        field: str = "",
    ) -> None:
        """Count and log one bad input: a whole ``event``, a ``value`` or ``meta``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if dev is not None:
            dev.stats["errors_total"] += 1
            dev.stats["last_error"] = f"{reason}: {detail}" if detail else reason
        # A decoder that sends text for a mapped field does so on every uplink: one
        # line per device and reason per second, the rest counted.
        quiet = self._limiter.allow(f"{dev.config.id if dev else ''}/{what}/{field}/{reason}")
        if quiet is None:
            return
        log = self._log if dev is None else self._log.bind(device=dev.config.id)
        log.info(f"{what}_rejected", reason=reason, error=detail[:120], suppressed=quiet)

    # -- MQTT (paho's thread hands messages over, nothing else) --------------

    def _client(self, loop: asyncio.AbstractEventLoop, lost: asyncio.Future[str]) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if self._options.get("username"):
            client.username_pw_set(self._options["username"], self._options.get("password"))
        tls = self._options.get("tls")
        if isinstance(tls, dict):
            ctx = ssl.create_default_context(cafile=tls.get("ca_file"))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.get("cert_file"):
                ctx.load_cert_chain(tls["cert_file"], tls.get("key_file"))
            client.tls_set_context(ctx)

        def gone(reason: str) -> None:
            if not lost.done():
                lost.set_result(reason)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc.is_failure:
                loop.call_soon_threadsafe(gone, f"connect refused: {rc}")
            else:
                c.subscribe(self.topic, qos=1)
                loop.call_soon_threadsafe(self._connected)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._enqueue, bytes(msg.payload))

        client.on_connect = on_connect
        client.on_message = on_message

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            loop.call_soon_threadsafe(gone, f"disconnected: {rc}")

        def on_connect_fail(_c: mqtt.Client, _u: Any) -> None:
            loop.call_soon_threadsafe(gone, "connect failed")

        client.on_disconnect = on_disconnect
        client.on_connect_fail = on_connect_fail
        return client

    def _connected(self) -> None:
        self.connected = True
        self._reopen.reset()
        self._log.info("broker_connected", broker=self.broker, port=self.port, topic=self.topic)

    def _enqueue(self, payload: bytes) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self._reject("queue_full", f"{QUEUE_MAX} events waiting")

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Subscribe until cancelled; reconnect with backoff when the broker goes."""
        self._sink = sink
        pump = asyncio.create_task(self._pump(sink))
        try:
            await supervise(self._session, self._reopen, self._on_lost)
        finally:
            self._sink = None
            self.connected = False
            await cancel_and_wait([pump])

    async def _on_lost(self, reason: str) -> None:
        self.connected = False
        self.counters["reconnects"] += 1
        self._log.warning("broker_lost", error=reason)
        # Nothing of these devices can arrive now: say so once per outage, like
        # every other source, so the hub sees a gap and not a stale value.
        bad = newly_unreachable(self._devices.values())
        if self._sink is not None:
            await self._deliver(self._sink, bad)

    async def _session(self) -> str:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()
        client = self._client(loop, lost)
        try:
            client.connect_async(self.broker, self.port, keepalive=30)
            client.loop_start()
            return await lost
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    async def _pump(self, sink: ReadingSink) -> None:
        while True:
            payload = await self._queue.get()
            try:
                readings = self.handle_event(payload)
            except Exception as exc:  # a bug must not stop the source
                self._log.exception("event_failed")
                self._reject("internal_error", repr(exc))
                continue
            await self._deliver(sink, readings)

    async def _deliver(self, sink: ReadingSink, readings: list[Reading]) -> None:
        if readings:
            if self._clock_ok is not None and not self._clock_ok():
                readings = [dataclasses.replace(r, time_ok=False) for r in readings]
            await sink(readings)

    # -- events ------------------------------------------------------------

    def handle_event(self, payload: bytes) -> list[Reading]:
        """One uplink event's readings; a bad event is counted and gives none."""
        self.counters["events"] += 1
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            self._reject("bad_json", str(exc)[:80])
            return []
        if not isinstance(event, dict) or not isinstance(event.get("deviceInfo"), dict):
            self._reject("bad_event", "no deviceInfo object")
            return []
        eui = str(event["deviceInfo"].get("devEui", "")).lower()
        dev = self._devices.get(eui)
        if dev is None:
            self._reject("unknown_dev_eui", eui)
            return []
        dedup = event.get("deduplicationId")
        if isinstance(dedup, str) and dedup:
            if dedup in self._seen:
                self.counters["duplicates"] += 1
                return []
            self._seen[dedup] = None
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
        obj = event.get("object")
        if not isinstance(obj, dict):
            self._reject("no_object", "no decoded object (is a codec set in ChirpStack?)", dev)
            return []
        dev.stats["frames"] += 1
        if self.connected:  # not an uplink queued before the broker went
            dev.down = False
        return self._readings(dev, obj, event)

    def _readings(self, dev: _Device, obj: dict[str, Any], event: dict[str, Any]) -> list[Reading]:
        ts = event_time(event.get("time")) or utc_now()
        meta, dropped = _radio_meta(event)
        for why in dropped:
            self._reject("bad_meta", why, dev, what="meta", field=why.split(" ", 1)[0])
        out: list[Reading] = []
        for key, raw in flatten(obj):
            fm = dev.fields.get(key)
            if fm is None:
                dev.stats["unmapped"] += 1
                continue
            value, reason = engineering(fm, raw)
            if reason is not None:
                self._reject(reason, f"{key} = {describe(raw)}: a finite number is allowed",
                             dev, what="value", field=key)  # fmt: skip
            out.append(
                Reading(
                    dev.config.id,
                    fm.name,
                    value,
                    fm.unit,
                    ts,
                    Quality.GOOD if reason is None else Quality.BAD,
                    family=fm.family,
                    cell=dev.cell,
                    reason=reason,
                    meta=meta,
                )
            )
        dev.stats["last_seen"] = time.time()
        self.counters["readings"] += len(out)
        return out

    def status(self) -> dict[str, object]:
        return {
            "bus": self.bus.name,
            "type": self.bus.type,
            "connected": self.connected,
            **self.counters,
            "devices": {
                d.config.id: {"state": _state(d), **d.stats} for d in self._devices.values()
            },
            "rejected": dict(self.rejected),
        }


def _state(dev: _Device) -> str:
    if dev.down:
        return "unreachable"
    return "ok" if dev.stats["frames"] else "waiting"


def build_source(bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext) -> Source:
    """The source of a ``chirpstack-mqtt`` bus."""
    return ChirpStackSource(
        bus,
        [(d, ctx.cell_for(d)) for d in devices],
        clock_ok=ctx.clock_ok,
        client_id=f"cityedge-{ctx.site.gateway_id}-{bus.name}",
    )
