"""The periodic health message: what the operations centre's monthly report is made of.

:func:`build_health` is pure: it turns the status snapshot the agent already
answers on its control socket (see docs/operations.md) into one small dict,
and, given the previous snapshot, reports what happened *in the period*
between the two (polls received against polls expected, alerts raised,
readings dropped, reconnects). The agent publishes it on its health topic
every ``health_every_s`` and keeps the snapshot for the next one.

Data completeness of a device is the share of the readings it should have
delivered in the period that it did. Both counts come from the device's
entry in its source's status: a device whose status has ``poll_interval_s``
(Modbus, OPC UA while polling) is polled, ``received`` counts its successful
``polls`` and ``expected`` is ``period / poll_interval_s``; any other device
is a push device (LoRaWAN, ChirpStack, BLE, serial, OPC UA subscriptions),
``received`` counts its ``frames``, and ``expected`` comes from an
``expected_interval_s`` in its status, which no push source reports today:
their ``expected`` and ratio are ``None``. A device that appeared mid-period
(a reload) counts from zero. Ratios are capped at 1.0 (a manual read is not
a surplus).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cityedge.metrics import DOWN_STATES
from cityedge.readings import format_ts

SCHEMA = 1
LEVELS = ("blue", "yellow", "red")
OUTBOX_CLASSES = ("alert", "event", "telemetry")


def _d(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _n(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def devices_of(snapshot: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every device's status across all sources, by device id."""
    found: dict[str, Mapping[str, Any]] = {}
    for src in _d(snapshot.get("sources")).values():
        for dev, ds in _d(_d(src).get("devices")).items():
            found[str(dev)] = _d(ds)
    return found


def _received_key(ds: Mapping[str, Any]) -> str:
    """What a device's deliveries are counted in: polls if it is polled, else frames."""
    return "polls" if _n(ds.get("poll_interval_s")) > 0 else "frames"


def completeness(
    now: Mapping[str, Any], before: Mapping[str, Any] | None, period_s: float
) -> dict[str, Any]:
    """Per device: received and expected in the period, and their ratio (None: unknown)."""
    earlier = devices_of(before or {})
    out: dict[str, Any] = {}
    for dev, ds in sorted(devices_of(now).items()):
        key = _received_key(ds)
        received = _n(ds.get(key)) - _n(earlier.get(dev, {}).get(key))
        interval = _n(ds.get("poll_interval_s") or ds.get("expected_interval_s"))
        expected = int(period_s / interval) if interval > 0 else None
        ratio = None
        if expected:
            ratio = round(min(1.0, max(0.0, received) / expected), 4)
        out[dev] = {"received": int(max(0.0, received)), "expected": expected, "ratio": ratio}
    return out


def _delta(
    now: Mapping[str, Any], before: Mapping[str, Any], keys: tuple[str, ...]
) -> dict[str, int]:
    return {k: int(max(0.0, _n(now.get(k)) - _n(before.get(k)))) for k in keys}


def build_health(
    snapshot: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The health message for the period since ``previous`` (or since start).

    ``snapshot`` and ``previous`` are status snapshots (the control socket's
    ``status`` answer); ``now`` stamps the message. Schema: docs/operations.md.
    """
    prev = previous or {}
    uptime = _n(snapshot.get("uptime_s"))
    period = uptime - _n(prev.get("uptime_s")) if previous is not None else uptime
    if period < 0:  # the agent restarted between the two snapshots
        period, prev = uptime, {}
    per_device = completeness(snapshot, prev or None, period)
    devices = devices_of(snapshot)
    down = sorted(d for d, ds in devices.items() if ds.get("state") in DOWN_STATES)
    ratios = [c["ratio"] for c in per_device.values() if c["ratio"] is not None]
    alerts, prev_alerts = _d(snapshot.get("alerts")), _d(prev.get("alerts"))
    ob, prev_ob = _d(snapshot.get("outbox")), _d(prev.get("outbox"))
    up, prev_up = _d(snapshot.get("uplink")), _d(prev.get("uplink"))
    dropped = _delta(
        _d(ob.get("counters")),
        _d(prev_ob.get("counters")),
        tuple(f"dropped_{c}" for c in OUTBOX_CLASSES),
    )
    message: dict[str, Any] = {
        "kind": "health",
        "schema": SCHEMA,
        "gateway": snapshot.get("gateway"),
        "site": snapshot.get("site"),
        "uptime_s": round(uptime, 1),
        "period_s": round(period, 1),
        "software": {"version": snapshot.get("version")},
        "models": dict(_d(_d(snapshot.get("anomaly")).get("models"))),
        "devices": {"total": len(devices), "healthy": len(devices) - len(down), "down": down},
        "completeness": {
            "overall": round(sum(ratios) / len(ratios), 4) if ratios else None,
            "devices": per_device,
        },
        "alerts": {
            "active": {lvl: int(_n(_d(alerts.get("active")).get(lvl))) for lvl in LEVELS},
            "raised": _delta(_d(alerts.get("raised")), _d(prev_alerts.get("raised")), LEVELS),
        },
        "outbox": {
            "readings_waiting": int(_n(ob.get("readings_waiting"))),
            "bytes_waiting": int(_n(ob.get("bytes_waiting"))),
            "bound_bytes": int(_n(ob.get("bound_bytes"))),
            "dropped": {k.removeprefix("dropped_"): v for k, v in dropped.items()},
        },
        "uplink": {
            "state": up.get("state"),
            **_delta(up, prev_up, ("reconnects", "batches_acked", "readings_acked")),
        },
        "clock": dict(_d(snapshot.get("clock"))),
    }
    if now is not None:
        message["ts"] = format_ts(now)
    return message
