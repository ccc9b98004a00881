"""Decoded values and radio metadata checked before they become a reading.

A LoRaWAN profile's ``[[fields]]`` are numbers: the profile format gives them
a scale and an offset and no other type (docs/profiles.md). So a value is a
finite number or it is not published as one: text (even ``"3426"``), a
boolean or null from a network server's decoder becomes a bad reading with a
reason, and so does a number too large for a double (``1e400`` parses as
infinity) or one the profile's scale pushes past it. The scaling itself is
:meth:`~cityedge.profiles.FieldMap.engineering`, as for every push driver.

Reasons: ``not_a_number`` (text, a boolean, anything else), ``not_available``
(null, as BLE names a value the device left out) and ``not_finite``.
:func:`engineering` serves the ``chirpstack-mqtt`` bus and :func:`readings`
(the payload codecs' values of a ``lorawan-udp`` uplink) alike.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from cityedge.drivers.lorawan.devices import Device
from cityedge.drivers.lorawan.payload import Decoded
from cityedge.profiles import FieldMap
from cityedge.readings import Quality, Reading

Number = int | float


def _finite(value: Number) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a double
        return False


def engineering(fm: FieldMap, raw: Any) -> tuple[Number | None, str | None]:
    """``(value, None)`` for a good number, scaled by the field; ``(None, reason)`` if not."""
    if raw is None:
        return None, "not_available"
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, "not_a_number"
    if not _finite(raw):
        return None, "not_finite"
    value = fm.engineering(raw)
    if not isinstance(value, int | float) or not _finite(value):
        return None, "not_finite"
    return value, None


def readings(
    dev: Device, decoded: Decoded, ts: datetime, meta: dict[str, Any]
) -> tuple[list[Reading], list[tuple[str, str]]]:
    """A ``lorawan-udp`` uplink's readings through the profile's fields, and the values
    refused as ``(reason, detail)`` for the driver to count (a device's own ``bad`` flags
    are readings with its reason, not refusals)."""
    out: list[Reading] = []
    refused: list[tuple[str, str]] = []
    for key in (*decoded.values, *decoded.bad):
        fm = dev.fields.get(key)
        if fm is None:
            dev.count("unmapped")
            continue
        common: dict[str, Any] = dict(
            device=dev.config.id,
            point=fm.name,
            unit=fm.unit or decoded.units.get(key, ""),
            ts=ts,
            family=fm.family,
            cell=dev.cell,
            meta=meta,
        )
        value: Number | None = None
        reason: str | None = decoded.bad.get(key)
        if reason is None:
            value, reason = engineering(fm, decoded.values[key])
            if reason is not None:  # a profile scale beyond a double
                refused.append((reason, f"{key} scaled by {fm.scale}"))
        if reason is None:
            out.append(Reading(value=value, **common))
        else:
            out.append(Reading(value=None, quality=Quality.BAD, reason=reason, **common))
    return out, refused


def finite_or_none(value: Any) -> Number | None:
    """A finite number (not a boolean) as it is, else None: for radio metadata."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        return None
    return value


def uint_or_none(value: Any, top: int) -> int | None:
    """An integer in ``0..top`` (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        return None
    return value


def describe(value: Any) -> str:
    """A short, log-safe picture of a rejected value."""
    return repr(value)[:40]
