"""The ``alert`` table of a profile's point or field: blue / yellow / red levels, checked.

``alert = {above|below = {blue, yellow, red}, hysteresis, clear_after,
cooldown_s}`` becomes a :class:`cityedge.alerts.AlertRule`; every problem is
reported at once with where it is, what is allowed and what was given
(docs/profiles.md, "Alerts").
"""

from __future__ import annotations

from typing import Any

from cityedge.alerts import AlertRule, Level
from cityedge.config.checks import Context, Field, integer, number, table
from cityedge.config.toml_lines import Key

LEVEL_FIELDS = {"blue": Field(number()), "yellow": Field(number()), "red": Field(number())}
ALERT_FIELDS = {
    "above": Field(table(LEVEL_FIELDS)),
    "below": Field(table(LEVEL_FIELDS)),
    "hysteresis": Field(number(0)),
    "clear_after": Field(integer(1, 10_000)),
    "cooldown_s": Field(number(0)),
}


def _alert(**values: Any) -> AlertRule | None:
    """An alert = {above|below = {blue, yellow, red}, hysteresis, ...} table.

    None without a valid above or below table: its own problems are reported.
    """
    direction = "above" if "above" in values else "below"
    if direction not in values:
        return None
    levels = values.pop(direction)
    values.pop("below", None)  # both given: _alert_post reports it
    triple = (levels.get("blue"), levels.get("yellow"), levels.get("red"))
    return AlertRule(levels=triple, direction=direction, **values)


def _alert_post(ctx: Context, rule: AlertRule | None, key: Key) -> None:
    has = [d for d in ("above", "below") if (*key, d) in ctx.lines]
    if len(has) != 1:
        keys = sorted(str(k[-1]) for k in ctx.lines if k[:-1] == key)
        ctx.report(key, "needs exactly one of above or below", ALERT_DIRECTIONS, keys)
        return
    if rule is None:
        return  # the above or below table is bad, and its problems are reported
    given = {n: t for n, t in zip(LEVEL_FIELDS, rule.levels, strict=True) if t is not None}
    if not given:
        ctx.report((*key, has[0]), "needs at least one level", "blue, yellow, red", given)
        return
    used = list(given.values())
    ordered = sorted(used) if rule.direction == "above" else sorted(used, reverse=True)
    if used != ordered:
        sign = "<=" if rule.direction == "above" else ">="
        allowed = f"blue {sign} yellow {sign} red, for an alert {rule.direction} them"
        ctx.report((*key, has[0]), "levels must get worse from blue to red", allowed, given)
    _hysteresis_post(ctx, rule, key, next(iter(given.items())))


def _hysteresis_post(ctx: Context, rule: AlertRule, key: Key, lowest: tuple[str, float]) -> None:
    """An alert above levels that are all positive must clear at a reading of 0.

    Most values alerted on (concentrations, counts, flows, levels, power
    drawn) never go below 0: a hysteresis reaching past it keeps the alert
    raised for ever. What a value's floor is otherwise is not in the profile,
    and a below alert's clear point has no such common ceiling: neither is
    checked. ``lowest`` is the level the alert clears from (the first given).
    """
    if rule.direction != "above" or rule.level_of(0.0) != Level.NONE or rule.below_clear(0.0):
        return
    name, level = lowest
    message = (
        f"too large: the alert would clear only below {level - rule.hysteresis:g}, "
        "which a value that cannot go below 0 never reaches"
    )
    allowed = f"less than the lowest level ({name} = {level:g})"
    ctx.report((*key, "hysteresis"), message, allowed, rule.hysteresis)


ALERT_DIRECTIONS = "above = {blue, yellow, red} or below = {blue, yellow, red}"
ALERT = Field(table(ALERT_FIELDS, _alert, _alert_post))
