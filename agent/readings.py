"""The unit of data that flows from drivers through the outbox to the uplink.

A :class:`Reading` is immutable and carries everything the data hub needs to
place a value: which device and point, the value and its unit, when it was
taken (UTC, microseconds), how much to trust it, its sensor family and the
grid cell of the device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SENSOR_FAMILIES = (
    "environment",
    "traffic",
    "energy",
    "water",
    "structures",
    "public_safety",
    "lighting",
    "parking",
)

Value = bool | int | float | str | None


class Quality(enum.StrEnum):
    """How far a reading can be trusted (OPC UA's Good / Bad / Uncertain)."""

    GOOD = "good"
    BAD = "bad"
    UNCERTAIN = "uncertain"


class Priority(enum.IntEnum):
    """Outbox class. Lower is more important: sent first, dropped last."""

    ALERT = 0
    EVENT = 1
    TELEMETRY = 2


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """ISO 8601 UTC with exactly six fractional digits and a Z suffix."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point of one device at one instant.

    ``reason`` is set when quality is not good: a short machine-readable cause
    such as ``timeout`` or ``modbus_exception``; ``code`` carries a protocol
    code where there is one (the Modbus exception code, an OPC UA status code).
    ``time_ok`` is false while the gateway's clock is not known to be synced.
    """

    device: str
    point: str
    value: Value
    unit: str
    ts: datetime
    quality: Quality = Quality.GOOD
    family: str = "energy"
    cell: str = ""
    reason: str | None = None
    code: int | None = None
    time_ok: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready form used in uplink batches (see docs/uplink.md)."""
        rec: dict[str, Any] = {
            "device": self.device,
            "point": self.point,
            "value": self.value,
            "unit": self.unit,
            "ts": format_ts(self.ts),
            "quality": self.quality.value,
            "family": self.family,
            "cell": self.cell,
        }
        if self.reason is not None:
            rec["reason"] = self.reason
        if self.code is not None:
            rec["code"] = self.code
        if not self.time_ok:
            rec["time_ok"] = False
        if self.meta:
            rec["meta"] = self.meta
        return rec
