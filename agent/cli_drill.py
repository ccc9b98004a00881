"""``cityedge drill``: the scripted exercise on a live gateway, and the report to file.

Runs :class:`cityedge.drill.DrillRunner` against the agent's control socket
(the drill protocol is in docs/operations.md) and prints its report: text
for the technician, ``--json`` for the operations centre; ``--out FILE``
also writes it to a file. Exit 0 when the drill passed, 1 when a step failed
or the agent did not answer, 2 for a wrong option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from cityedge.cli_util import UsageError, add_json, add_socket, csv_choices, say
from cityedge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def add_parser(sub: Any) -> None:
    from cityedge.drill import STEPS

    d = sub.add_parser(
        "drill",
        help="exercise a live gateway (uplink cut, signer restart, silent device, full disk)",
        description="Every fault is undone after its step, and the agent undoes it by itself "
        "if this command dies (each drill command carries an expiry).",
    )
    add_socket(d)
    d.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated, in order, among {', '.join(STEPS)} (default: all)",
    )
    d.add_argument("--device", help="the device to silence (default: the first one that is ok)")
    d.add_argument("--cut-s", type=float, default=20.0, help="uplink cut length (default 20 s)")
    d.add_argument(
        "--step-timeout-s",
        type=float,
        default=120.0,
        help="how long a step may wait for the agent to react (default 120 s)",
    )
    d.add_argument(
        "--poll-s",
        type=float,
        default=1.0,
        help="how often the agent's status is read during a step (default 1 s)",
    )
    d.add_argument("--out", type=Path, help="also write the report to this file")
    add_json(d)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


def _check(args: argparse.Namespace) -> list[str]:
    from cityedge.drill import STEPS

    steps = csv_choices(args.steps, STEPS, "--steps")
    for name in ("cut_s", "step_timeout_s", "poll_s"):
        value = getattr(args, name)
        if not 0 < value <= 3600:
            raise UsageError(f"--{name.replace('_', '-')} must be above 0 and at most 3600 s")
    return steps


async def run_async(args: argparse.Namespace) -> int:
    from cityedge.drill import DrillError, DrillRunner

    try:
        steps = _check(args)
    except UsageError as exc:
        say("drill", str(exc))
        return EXIT_USAGE
    runner = DrillRunner(
        args.socket,
        device=args.device,
        cut_s=args.cut_s,
        step_timeout_s=args.step_timeout_s,
        poll_s=args.poll_s,
    )
    say("drill", f"drilling the agent on {args.socket}: {', '.join(steps)}")
    try:
        report = await runner.run(steps)
    except DrillError as exc:
        say("drill", f"{exc} (is the agent running? give --socket PATH if elsewhere)")
        return EXIT_FAILURE
    text = (
        json.dumps(report.as_dict(), indent=2, sort_keys=True)
        if args.json
        else report.render_text()
    )
    print(text)
    if args.out is not None:
        try:
            args.out.write_text(text + "\n")
        except OSError as exc:
            say("drill", f"cannot write the report to {args.out}: {exc.strerror}")
            return EXIT_FAILURE
        say("drill", f"report written to {args.out}")
    return EXIT_OK if report.passed else EXIT_FAILURE
