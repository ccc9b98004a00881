"""Threshold rules from profiles, and anomaly scores, on the alert path.

The engine looks up each reading's rule (a profile's ``alert`` on the point),
feeds the :class:`~cityedge.alerts.AlertTracker`, and returns alert records
for the outbox's alert class: sent ahead of telemetry, dropped last.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cityedge.alerts import AlertEvent, AlertRule, AlertTracker
from cityedge.config.model import Config
from cityedge.readings import Quality, Reading


def rules_from(config: Config) -> dict[tuple[str, str], AlertRule]:
    """(device, point) -> rule, from every device's profile."""
    rules: dict[tuple[str, str], AlertRule] = {}
    for dev in config.devices:
        for item in dev.profile.all_points():
            if item.alert is not None:
                rules[(dev.id, item.name)] = item.alert
    return rules


# A device that stops answering (or that a drill silences) raises a yellow
# "device_down" alert on its pseudo-point "_device". It clears after the device
# has answered DOWN_CLEAR_AFTER times in a row, so a device that flaps keeps
# one alert raised instead of making one per flap. No cool-down: once cleared,
# the next outage is a new alert, however soon it comes (a cool-down here hid
# a second outage, and made a repeated drill fail).
DOWN_REASONS = frozenset({"timeout", "unreachable", "silent", "no_adapter", "bad_response"})
DOWN_CLEAR_AFTER = 3
DEVICE_DOWN = AlertRule(levels=(None, 1.0, None), hysteresis=0.5, clear_after=DOWN_CLEAR_AFTER,
                        cooldown_s=0.0, kind="device_down")  # fmt: skip


class AlertEngine:
    def __init__(self, rules: dict[tuple[str, str], AlertRule], gateway_id: str) -> None:
        self.rules = rules
        self.gateway_id = gateway_id
        self.tracker = AlertTracker()

    def on_readings(self, readings: Sequence[Reading]) -> list[dict[str, Any]]:
        out = self._device_health(readings)
        for r in readings:
            rule = self.rules.get((r.device, r.point))
            if rule is None or r.quality != Quality.GOOD:
                continue
            if isinstance(r.value, bool) or not isinstance(r.value, int | float):
                continue
            ev = self.tracker.observe(rule, r.device, r.point, r.ts, float(r.value),
                                      unit=r.unit, cell=r.cell)  # fmt: skip
            if ev is not None:
                out.append(self.record(ev))
        return out

    def _device_health(self, readings: Sequence[Reading]) -> list[dict[str, Any]]:
        state: dict[str, tuple[float, Reading]] = {}
        for r in readings:
            down = r.quality == Quality.BAD and r.reason in DOWN_REASONS
            if down or r.quality == Quality.GOOD:
                prev = state.get(r.device)
                # One good reading is enough to say the device is there.
                if prev is None or (prev[0] == 1.0 and not down):
                    state[r.device] = (1.0 if down else 0.0, r)
        out = []
        for device, (value, r) in state.items():
            ev = self.tracker.observe(DEVICE_DOWN, device, "_device", r.ts, value, cell=r.cell)
            if ev is not None:
                out.append(self.record(ev))
        return out

    def on_score(
        self,
        rule: AlertRule,
        device: str,
        point: str,
        ts: datetime,
        value: float,
        score: float,
        *,
        unit: str = "",
        cell: str = "",
    ) -> dict[str, Any] | None:
        ev = self.tracker.observe(rule, device, point, ts, value, score=score, unit=unit, cell=cell)
        return None if ev is None else self.record(ev)

    def record(self, ev: AlertEvent) -> dict[str, Any]:
        return {"gateway": self.gateway_id, **ev.to_record()}
