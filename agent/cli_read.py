"""``cityedge read DEVICE [POINT ...]``: one read through the running agent's own bus scheduler.

The agent takes the read in its polling schedule (so it never collides with
polling on an RS-485 line) and answers with the readings. Control command::

    {"cmd": "read", "device": "meter-1", "points": ["voltage_l1"]}
    -> {"ok": true, "device": "meter-1", "readings": [<reading record>, ...]}

``points`` empty means every point of the device's profile. A device on a
bus that is not read on demand (LoRaWAN, BLE, a serial sensor that sends on
its own, OPC UA) answers with the last value of each point it sent, and
``"last_received": true``; a point it has not sent yet is missing. A reading
record is the uplink form, ``Reading.to_record()`` (docs/uplink.md: device,
point, value, unit, ts, quality, and reason/code when bad). The CLI waits
``--timeout`` seconds. An unknown device or point is ``ok: false`` with an
error naming what exists.

Exit 0 when every reading is good or uncertain, 1 when a reading is bad, a
point is missing, or the agent refused or did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cityedge.cli_util import AgentRefused, AgentUnreachable, add_json, add_socket, ask, say
from cityedge.cli_util import print_json as _print_json
from cityedge.errors import EXIT_FAILURE, EXIT_OK

COLUMNS = ("point", "value", "unit", "quality", "ts")


def add_parser(sub: Any) -> None:
    r = sub.add_parser("read", help="read a device now, through the running agent")
    r.add_argument("device", metavar="DEVICE", help="a device id from the config")
    r.add_argument("points", metavar="POINT", nargs="*", help="point names (default: all)")
    add_socket(r)
    r.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (default 15)")
    add_json(r)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    try:
        answer = await ask(
            args.socket,
            "read",
            timeout_s=args.timeout,
            device=args.device,
            points=list(args.points),
        )
    except (AgentUnreachable, AgentRefused) as exc:
        say("read", str(exc))
        return EXIT_FAILURE
    readings = [r for r in answer.get("readings", []) if isinstance(r, dict)]
    missing = sorted(set(args.points) - {str(r.get("point")) for r in readings})
    last = bool(answer.get("last_received"))
    if args.json:
        doc = {"device": args.device, "readings": readings, "missing": missing}
        _print_json({**doc, "last_received": True} if last else doc)
    else:
        print(render_readings(args.device, readings))
        if last:
            say("read", str(answer.get("note") or "the last values the device sent"))
    if missing:
        say("read", f"no reading for {', '.join(missing)}")
    bad = [r for r in readings if r.get("quality") == "bad"]
    return EXIT_FAILURE if bad or missing or not readings else EXIT_OK


def _cell(rec: dict[str, Any], col: str) -> str:
    value = rec.get(col)
    if col == "quality" and value != "good":
        extra = [str(rec[k]) for k in ("reason", "code") if rec.get(k) is not None]
        return f"{value} ({', '.join(extra)})" if extra else str(value)
    if col == "ts" and rec.get("time_ok") is False:
        return f"{value} (clock not synced)"
    return "" if value is None else str(value)


def render_readings(device: str, readings: list[dict[str, Any]]) -> str:
    """A table: point, value, unit, quality, timestamp."""
    if not readings:
        return f"{device}: no readings"
    rows = [list(COLUMNS)] + [[_cell(r, c) for c in COLUMNS] for r in readings]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return f"{device}\n" + "\n".join(lines)
