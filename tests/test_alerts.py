"""Alert levels: raise, escalate, hysteresis, clear, cool-down, evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cityedge.alerting import AlertEngine
from cityedge.alerts import AlertRule, AlertTracker, Level
from cityedge.readings import Quality, Reading

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PM25 = AlertRule(levels=(25.0, 50.0, 75.0), hysteresis=5.0, clear_after=3, cooldown_s=600)


def feed(tracker: AlertTracker, rule: AlertRule, values: list[float], start: int = 0):  # type: ignore[no-untyped-def]
    out = []
    for i, v in enumerate(values):
        ev = tracker.observe(rule, "aq-1", "pm2_5", T0 + timedelta(seconds=60 * (start + i)), v)
        if ev is not None:
            out.append(ev)
    return out


def test_raise_escalate_clear() -> None:
    """A rising PM2.5 raises blue, escalates to red, and clears once calm with hysteresis."""
    t = AlertTracker()
    events = feed(t, PM25, [10, 30, 31, 80, 60, 22, 21, 19, 18, 17])
    assert [(e.transition, e.level) for e in events] == [
        ("raised", Level.BLUE),
        ("escalated", Level.RED),
        ("cleared", Level.RED),
    ]
    assert len({e.alert_id for e in events}) == 1, "one alert id from raise to clear"
    assert events[0].recent[-1][1] == 30 and events[1].value == 80


def test_hysteresis_holds_a_chattering_value() -> None:
    """A value wobbling around the threshold does not clear while within the hysteresis."""
    t = AlertTracker()
    events = feed(t, PM25, [26, 24, 26, 23, 25, 22, 24, 21, 26])
    assert [e.transition for e in events] == ["raised"]


def test_cooldown_blocks_repeat_but_not_escalation() -> None:
    """After a clear, the same level stays quiet for the cool-down; a higher one raises."""
    t = AlertTracker()
    first = feed(t, PM25, [30, 10, 10, 10])
    assert [e.transition for e in first] == ["raised", "cleared"]
    again = feed(t, PM25, [30, 10, 10, 10], start=4)
    assert again == [], "same level within the cool-down"
    worse = feed(t, PM25, [55], start=8)
    assert [(e.transition, e.level) for e in worse] == [("raised", Level.YELLOW)]
    calm = feed(t, PM25, [10, 10, 10], start=30)
    assert [e.transition for e in calm] == ["cleared"]
    assert feed(t, PM25, [30], start=35) == [], "blue is within the cool-down of yellow's clear"
    assert [e.transition for e in feed(t, PM25, [30], start=45)] == ["raised"]


def test_below_direction_and_missing_levels() -> None:
    """A water level falling below a limit raises; unused levels are skipped."""
    rule = AlertRule(levels=(None, 1.0, 0.5), direction="below", hysteresis=0.1)
    t = AlertTracker()
    events = [t.observe(rule, "tank", "level", T0 + timedelta(minutes=i), v)
              for i, v in enumerate([2.0, 0.9, 0.4])]  # fmt: skip
    assert [(e.transition, e.level) for e in events if e] == [
        ("raised", Level.YELLOW),
        ("escalated", Level.RED),
    ]


def test_record_carries_evidence() -> None:
    """The alert record names device, point, level, value, recent values and the rule."""
    t = AlertTracker()
    (ev,) = feed(t, PM25, [10, 12, 30])
    rec = ev.to_record()
    assert rec["level"] == "blue" and rec["device"] == "aq-1" and rec["point"] == "pm2_5"
    assert [r["value"] for r in rec["evidence"]["recent"]] == [10, 12, 30]
    assert rec["evidence"]["rule"]["levels"] == {"blue": 25.0, "yellow": 50.0, "red": 75.0}


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=200))
def test_events_are_well_formed(values: list[float]) -> None:
    """Any sequence gives raise before clear, never two raises without a clear between."""
    t = AlertTracker()
    state = "idle"
    for ev in feed(t, PM25, values):
        if ev.transition == "raised":
            assert state == "idle"
            state = "raised"
        elif ev.transition == "escalated":
            assert state == "raised"
        else:
            assert state == "raised"
            state = "idle"


def _device_batch(t: int, down: bool) -> list[Reading]:
    ts = T0 + timedelta(seconds=t)
    if down:
        return [Reading("meter-1", "voltage", None, "V", ts, Quality.BAD, reason="timeout")]
    return [Reading("meter-1", "voltage", 230.0, "V", ts)]


def _down_transitions(pattern: str) -> list[str]:
    """Feed one batch per character (d: the device is down, u: it answers), every 10 s."""
    engine = AlertEngine({}, "gw-1")
    out = []
    for i, c in enumerate(pattern):
        for rec in engine.on_readings(_device_batch(10 * i, c == "d")):
            assert rec["point"] == "_device" and rec["kind"] == "device_down"
            out.append(f"{i}:{rec['transition']}")
    return out


def test_every_outage_after_a_recovery_raises_its_own_device_down_alert() -> None:
    """A second outage a minute after the first is alerted (a cool-down once hid it)."""
    assert _down_transitions("uddduuuuddd") == ["1:raised", "6:cleared", "8:raised"]


def test_a_flapping_device_keeps_one_alert_raised() -> None:
    """Down, up, down, up...: cleared only after the device answers three times in a row."""
    assert _down_transitions("ududududuuu") == ["1:raised", "10:cleared"]
