"""Prometheus metrics: text exposition format 0.0.4 on a loopback port.

Off by default; the config turns it on with ``metrics = {listen =
"127.0.0.1:9108"}``. Two parts:

* :func:`render` is pure: a status snapshot (the dict the control socket's
  ``status`` command answers, see docs/operations.md) in, exposition text
  out, with HELP and TYPE lines and escaped label values. Anything the
  snapshot lacks is simply not exported.
* :class:`MetricsServer` is a tiny asyncio HTTP/1.0 server: ``GET /metrics``
  renders a fresh snapshot, anything else is 404 (405 for another method),
  a request head over :data:`MAX_REQUEST` bytes or slower than
  :data:`REQUEST_TIMEOUT_S` is dropped. One connection, one answer.

Metric names are listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("cityedge.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8 * 1024
REQUEST_TIMEOUT_S = 5.0
OUTBOX_CLASSES = ("alert", "event", "telemetry")

Snapshot = Mapping[str, Any]
SnapshotFn = Callable[[], Snapshot | Awaitable[Snapshot]]


# -- the text format ------------------------------------------------------


# Device states in source status that mean no data is coming (every driver's word for it).
DOWN_STATES = frozenset({"down", "unreachable", "silent", "no_adapter"})


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, NaN and infinities spelt as Go does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its HELP and TYPE, and its samples."""

    name: str
    kind: str  # counter, gauge, summary, untyped
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: object, suffix: str = "", **labels: object) -> None:
        """Add a sample if ``value`` is a number (anything else is skipped)."""
        number = _number(value)
        if number is not None:
            self.samples.append((suffix, {k: str(v) for k, v in labels.items()}, number))

    def text(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels.items()))
            sel = f"{{{inner}}}" if inner else ""
            lines.append(f"{self.name}{suffix}{sel} {format_value(value)}")
        return "\n".join(lines) + "\n"


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# -- from a snapshot to families ------------------------------------------


def _gateway(s: Snapshot) -> Iterable[Family]:
    info = Family("cityedge_info", "gauge", "The agent's version and identity (always 1).")
    info.add(1, version=s.get("version", ""), gateway=s.get("gateway", ""), site=s.get("site", ""))
    up = Family("cityedge_uptime_seconds", "gauge", "Seconds since the agent started.")
    up.add(s.get("uptime_s"))
    clock = Family(
        "cityedge_clock_synchronized", "gauge", "1 when the system clock is known to be synced."
    )
    clock.add(_dict(s.get("clock")).get("ok"))
    return [info, up, clock]


def _errors(ds: Mapping[str, Any]) -> dict[str, float]:
    """A device's errors by reason, whatever key its source keeps them under.

    Sources count by reason in ``errors``; a source that only keeps a total
    (ChirpStack's ``errors_total``) has it exported as reason ``unclassified``,
    and so has any part of a total its reasons do not explain.
    """
    out: dict[str, float] = {}
    for reason, n in _dict(ds.get("errors")).items():
        if (number := _number(n)) is not None:
            out[str(reason)] = number
    rest = (_number(ds.get("errors_total")) or 0.0) - sum(out.values())
    if rest > 0:
        out["unclassified"] = out.get("unclassified", 0.0) + rest
    return out


def _buses(s: Snapshot) -> Iterable[Family]:
    connected = Family("cityedge_bus_connected", "gauge", "1 while the bus transport is open.")
    rejected = Family(
        "cityedge_bus_rejected_total",
        "counter",
        "Inputs a bus refused before they became readings (bad frames, strangers), by reason.",
    )
    for name, src in sorted(_dict(s.get("sources")).items()):
        src = _dict(src)
        bus = str(src.get("bus", name))
        connected.add(src.get("connected"), bus=bus)
        for reason, n in sorted(_dict(src.get("rejected")).items()):
            rejected.add(n, bus=bus, reason=reason)
    return [connected, rejected]


def _devices(s: Snapshot) -> Iterable[Family]:
    polls = Family("cityedge_device_polls_total", "counter", "Successful polls of a device.")
    frames = Family(
        "cityedge_device_frames_total",
        "counter",
        "Frames a push source received from a device (uplinks, adverts, notifications).",
    )
    errors = Family("cityedge_device_errors_total", "counter", "Errors of a device, by reason.")
    up = Family("cityedge_device_up", "gauge", "1 when the device answers, 0 when it is down.")
    latency = Family(
        "cityedge_device_poll_latency_seconds", "summary", "Time a successful poll took."
    )
    skipped = Family(
        "cityedge_device_skipped_slots_total", "counter", "Poll slots skipped (a poll ran late)."
    )
    for name, src in sorted(_dict(s.get("sources")).items()):
        src = _dict(src)
        bus = str(src.get("bus", name))
        for dev, ds in sorted(_dict(src.get("devices")).items()):
            ds = _dict(ds)
            polls.add(ds.get("polls"), bus=bus, device=dev)
            frames.add(ds.get("frames"), bus=bus, device=dev)
            for reason, n in sorted(_errors(ds).items()):
                errors.add(n, bus=bus, device=dev, reason=reason)
            if "state" in ds:
                up.add(ds["state"] not in DOWN_STATES, bus=bus, device=dev)
            skipped.add(ds.get("skipped_slots"), bus=bus, device=dev)
            count = _number(ds.get("polls"))
            total = _number(ds.get("latency_sum_s"))
            mean_ms = _number(ds.get("latency_mean_ms"))
            if total is None and mean_ms is not None and count is not None:
                total = mean_ms / 1000 * count
            if count is not None and total is not None:
                latency.add(total, "_sum", bus=bus, device=dev)
                latency.add(count, "_count", bus=bus, device=dev)
    return [polls, frames, errors, up, latency, skipped]


def _writer_outbox(s: Snapshot) -> Iterable[Family]:
    w, ob = _dict(s.get("writer")), _dict(s.get("outbox"))
    accepted = Family("cityedge_readings_accepted_total", "counter", "Readings committed.")
    accepted.add(w.get("accepted"))
    refused = Family("cityedge_readings_refused_total", "counter", "Readings the writer refused.")
    refused.add(w.get("refused"))
    queued = Family("cityedge_writer_queue_depth", "gauge", "Readings waiting to be committed.")
    queued.add(w.get("queued"))
    waits = Family(
        "cityedge_writer_waits_total", "counter", "Submits that waited for a full writer queue."
    )
    waits.add(w.get("waits"))
    depth = Family("cityedge_outbox_readings", "gauge", "Readings waiting in the outbox.")
    size = Family("cityedge_outbox_bytes", "gauge", "Bytes of readings waiting in the outbox.")
    for cls, v in sorted(_dict(ob.get("by_priority")).items()):
        depth.add(_dict(v).get("readings"), **{"class": cls})
        size.add(_dict(v).get("bytes"), **{"class": cls})
    bound = Family("cityedge_outbox_bound_bytes", "gauge", "The outbox's byte bound.")
    bound.add(ob.get("bound_bytes"))
    counters = _dict(ob.get("counters"))
    drops = Family(
        "cityedge_outbox_dropped_total", "counter", "Readings dropped by the bound's policy."
    )
    for cls in OUTBOX_CLASSES:
        drops.add(counters.get(f"dropped_{cls}", 0), **{"class": cls})
    full = Family(
        "cityedge_outbox_rejected_disk_full_total", "counter", "Readings refused: disk full."
    )
    full.add(counters.get("rejected_disk_full", 0))
    return [accepted, refused, queued, waits, depth, size, bound, drops, full]


def _uplink(s: Snapshot) -> Iterable[Family]:
    up = _dict(s.get("uplink"))
    connected = Family("cityedge_uplink_connected", "gauge", "1 while connected to the hub.")
    if "state" in up:
        connected.add(up["state"] == "connected")
    out = [connected]
    for key, help_ in (
        ("batches_published", "Batches published to the hub."),
        ("batches_acked", "Batches the hub acknowledged."),
        ("batches_nacked", "Batches the hub refused."),
        ("readings_acked", "Readings in acknowledged batches."),
        ("connects", "Connections made to the hub."),
        ("reconnects", "Reconnections after a lost connection."),
    ):
        fam = Family(f"cityedge_uplink_{key}_total", "counter", help_)
        fam.add(up.get(key))
        out.append(fam)
    return out


def _alerts_anomaly_signer(s: Snapshot) -> Iterable[Family]:
    al, an, sg = _dict(s.get("alerts")), _dict(s.get("anomaly")), _dict(s.get("signer"))
    raised = Family("cityedge_alerts_raised_total", "counter", "Alerts raised, by level.")
    for level, n in sorted(_dict(al.get("raised")).items()):
        raised.add(n, level=level)
    active = Family("cityedge_alerts_active", "gauge", "Alerts raised and not cleared, by level.")
    for level, n in sorted(_dict(al.get("active")).items()):
        active.add(n, level=level)
    scored = Family("cityedge_anomaly_scored_total", "counter", "Windows scored by the models.")
    scored.add(an.get("scored"))
    anomalies = Family("cityedge_anomalies_total", "counter", "Windows scored as anomalous.")
    anomalies.add(an.get("anomalies"))
    latency = Family("cityedge_signer_latency_seconds", "summary", "Time the signer took to sign.")
    if _number(sg.get("latency_count")) is not None:
        latency.add(sg.get("latency_sum_s"), "_sum")
        latency.add(sg.get("latency_count"), "_count")
    failures = Family("cityedge_signer_failures_total", "counter", "Sign requests that failed.")
    failures.add(sg.get("failures"))
    return [raised, active, scored, anomalies, latency, failures]


def render(snapshot: Snapshot) -> str:
    """The exposition text of a status snapshot (families without samples are left out)."""
    families = [
        *_gateway(snapshot),
        *_buses(snapshot),
        *_devices(snapshot),
        *_writer_outbox(snapshot),
        *_uplink(snapshot),
        *_alerts_anomaly_signer(snapshot),
    ]
    return "".join(f.text() for f in families if f.samples)


# -- the HTTP server ------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` or ``"[::1]:9108"`` -> (host, port); ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9108")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is out of range (1..65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"host must be an IP address or localhost, not {host!r}") from None
    return host, int(port)


class MetricsServer:
    """Serves ``GET /metrics`` from ``snapshot_fn`` (sync or async) on ``host:port``."""

    def __init__(self, host: str, port: int, snapshot_fn: SnapshotFn) -> None:
        self.host, self.port = host, port
        self.snapshot_fn = snapshot_fn
        self.scrapes = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; with port 0 the bound port is in ``self.port`` afterwards."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if not ipaddress.ip_address(self._server.sockets[0].getsockname()[0]).is_loopback:
            log.warning("metrics_not_on_loopback", host=self.host, port=self.port)
        log.info("metrics_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, ctype = await self._answer(head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return "404 Not Found", b"only /metrics here\n", "text/plain"
        if method != b"GET":
            return "405 Method Not Allowed", b"GET only\n", "text/plain"
        try:
            snap = self.snapshot_fn()
            if inspect.isawaitable(snap):
                snap = await snap
            text = render(snap)
        except Exception as exc:  # a scrape must not take the agent down
            log.warning("metrics_snapshot_failed", error=repr(exc))
            return "500 Internal Server Error", b"snapshot failed\n", "text/plain"
        self.scrapes += 1
        return "200 OK", text.encode(), CONTENT_TYPE
