"""Blue / yellow / red alerts: levels with hysteresis, cool-down and evidence. Pure.

An :class:`AlertRule` watches one stream (a device's point): a value against
profile thresholds, or an anomaly model's score against score levels. The
:class:`AlertTracker` keeps one small state per stream and turns each new
sample into at most one :class:`AlertEvent`:

* ``raised``: the stream reached a level (blue, yellow or red);
* ``escalated``: it reached a higher level while raised (never held back);
* ``cleared``: it stayed below the lowest level minus the hysteresis for
  ``clear_after`` samples in a row.

A level that was cleared is not raised again within ``cooldown_s`` of the
clear (a chattering sensor makes one alert, not hundreds); a higher level
than the one cleared still raises at once. Events carry their evidence: the
recent values, the value or score that crossed, the rule, the model.
"""

from __future__ import annotations

import enum
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityedge.readings import format_ts


class Level(enum.IntEnum):
    NONE = 0
    BLUE = 1
    YELLOW = 2
    RED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Thresholds per level (None: that level is not used), in the stream's units.

    ``direction`` is ``above`` (value >= threshold raises) or ``below``.
    ``kind`` is ``threshold`` (a profile rule on the value) or ``anomaly``
    (a model's score in [0, 1]).
    """

    levels: tuple[float | None, float | None, float | None]
    direction: str = "above"
    hysteresis: float = 0.0
    clear_after: int = 3
    cooldown_s: float = 600.0
    kind: str = "threshold"
    model: str | None = None  # model name and version, for anomaly rules
    evidence: int = 10  # recent values kept as evidence

    def level_of(self, x: float) -> Level:
        found = Level.NONE
        for lvl, threshold in zip((Level.BLUE, Level.YELLOW, Level.RED), self.levels, strict=True):
            if threshold is None:
                continue
            if (x >= threshold) if self.direction == "above" else (x <= threshold):
                found = lvl
        return found

    def below_clear(self, x: float) -> bool:
        lowest = next((t for t in self.levels if t is not None), None)
        if lowest is None:
            return True
        if self.direction == "above":
            return x < lowest - self.hysteresis
        return x > lowest + self.hysteresis


@dataclass(slots=True)
class _State:
    level: Level = Level.NONE
    alert_id: str | None = None
    since: datetime | None = None
    calm: int = 0
    cleared_at: datetime | None = None
    cleared_level: Level = Level.NONE
    recent: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=10))


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """What changed: sent on the alerts topic, ahead of telemetry."""

    alert_id: str
    transition: str  # raised | escalated | cleared
    level: Level
    device: str
    point: str
    kind: str
    ts: datetime
    value: float
    score: float | None
    rule: AlertRule
    recent: tuple[tuple[str, float], ...]
    unit: str = ""
    cell: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "alert_id": self.alert_id,
            "transition": self.transition,
            "level": self.level.label,
            "device": self.device,
            "point": self.point,
            "kind": self.kind,
            "ts": format_ts(self.ts),
            "value": self.value,
            "score": self.score,
            "unit": self.unit,
            "cell": self.cell,
            "evidence": {
                "recent": [{"ts": t, "value": v} for t, v in self.recent],
                "rule": {
                    "direction": rule.direction,
                    "levels": dict(zip(("blue", "yellow", "red"), rule.levels, strict=True)),
                    "hysteresis": rule.hysteresis,
                },
                "model": rule.model,
                **self.extra,
            },
        }


class AlertTracker:
    """One state per (device, point); feed samples in time order."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], _State] = {}
        self.raised = {lvl: 0 for lvl in (Level.BLUE, Level.YELLOW, Level.RED)}

    def active(self) -> dict[tuple[str, str], tuple[str, Level]]:
        return {
            k: (s.alert_id, s.level)
            for k, s in self._states.items()
            if s.alert_id is not None and s.level > Level.NONE
        }

    def forget(self, device: str, point: str) -> None:
        self._states.pop((device, point), None)

    def observe(
        self,
        rule: AlertRule,
        device: str,
        point: str,
        ts: datetime,
        value: float,
        *,
        score: float | None = None,
        unit: str = "",
        cell: str = "",
    ) -> AlertEvent | None:
        """Feed one sample (the score for anomaly rules, else the value)."""
        st = self._states.get((device, point))
        if st is None:
            st = self._states[(device, point)] = _State(recent=deque(maxlen=rule.evidence))
        st.recent.append((format_ts(ts), value))
        x = score if rule.kind == "anomaly" and score is not None else value
        level = rule.level_of(x)

        def event(transition: str, lvl: Level) -> AlertEvent:
            assert st is not None and st.alert_id is not None
            return AlertEvent(st.alert_id, transition, lvl, device, point, rule.kind, ts, value,
                              score, rule, tuple(st.recent), unit, cell)  # fmt: skip

        if st.level == Level.NONE:
            if level == Level.NONE:
                return None
            in_cooldown = (
                st.cleared_at is not None
                and (ts - st.cleared_at).total_seconds() < rule.cooldown_s
                and level <= st.cleared_level
            )
            if in_cooldown:
                return None
            st.level, st.alert_id, st.since, st.calm = level, uuid.uuid4().hex, ts, 0
            self.raised[level] += 1
            return event("raised", level)
        if level > st.level:
            st.level, st.calm = level, 0
            self.raised[level] += 1
            return event("escalated", level)
        if rule.below_clear(x):
            st.calm += 1
            if st.calm >= rule.clear_after:
                done = event("cleared", st.level)
                st.cleared_at, st.cleared_level = ts, st.level
                st.level, st.alert_id, st.calm = Level.NONE, None, 0
                return done
        else:
            st.calm = 0
        return None
