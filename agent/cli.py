"""The `cityedge` command: what a field technician types.

Every subcommand prints something readable on a terminal; those that report
state take ``--json`` for scripts. Exit codes: 0 fine, 1 failure, 2 usage,
78 bad configuration (systemd does not restart the agent for that one).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import signal
import sys
from pathlib import Path
from typing import Any

from cityedge import __version__, decode
from cityedge.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

DEFAULT_CONFIG = Path("/etc/cityedge/cityedge.toml")
DEFAULT_SOCKET = Path("/var/lib/cityedge/control.sock")
STOP_TIMEOUT_S = 25.0  # below systemd's default TimeoutStopSec of 90 s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cityedge", description="Smart-city edge gateway agent.")
    p.add_argument("--version", action="version", version=f"cityedge {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="validate a config file and the profiles it names")
    c.add_argument("config", type=Path, help="the TOML config file")
    c.add_argument("--profiles", type=Path, help="profiles folder (default: see docs/config.md)")

    r = sub.add_parser("run", help="run the agent (what the systemd unit starts)")
    r.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG)
    r.add_argument("--profiles", type=Path)
    r.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")

    s = sub.add_parser("status", help="a running agent's devices, outbox and uplink")
    s.add_argument("--socket", type=Path, default=DEFAULT_SOCKET)
    s.add_argument("--json", action="store_true", help="print JSON")

    decode.add_parser(sub)

    d = sub.add_parser("demo", help="the agent against simulated devices on loopback")
    d.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    d.add_argument("--workdir", type=Path, default=Path("demo-state"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "check": _check,
        "run": _run,
        "status": _status,
        "demo": _demo,
        "decode": decode.run,
    }[args.cmd]
    return handler(args)


def _check(args: argparse.Namespace) -> int:
    from cityedge.config.loader import check_config

    config, problems = check_config(args.config, args.profiles)
    if problems or config is None:
        for problem in problems:
            print(problem)
        print(f"{args.config}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_CONFIG
    profiles = {d.profile_name for d in config.devices}
    print(
        f"{args.config}: OK ({len(config.buses)} buses, {len(config.devices)} devices, "
        f"{len(profiles)} profiles from {config.profiles_dir})"
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    # A SIGTERM during start-up (before the event loop handles it) asks for an
    # orderly stop too, instead of killing the process half-way.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from cityedge import logs
    from cityedge.config.loader import check_config

    config, problems = check_config(args.config, args.profiles)
    fmt = None if args.log_format == "auto" else args.log_format == "json"
    logs.configure(config.log_level if config else "info", json=fmt)
    if problems or config is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"cityedge: refusing to start: {len(problems)} config problem(s)", file=sys.stderr)
        return EXIT_CONFIG
    from cityedge.agent import Agent

    # SIGINT and SIGTERM are handled inside: the agent commits what it holds
    # and closes the uplink cleanly before returning.
    agent = Agent(config, stop_timeout_s=STOP_TIMEOUT_S, stop_early=early)
    asyncio.run(agent.run())
    faulthandler.cancel_dump_traceback_later()
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from cityedge.control import request

    try:
        answer = asyncio.run(request(args.socket, "status"))
    except (OSError, TimeoutError) as exc:
        print(f"cityedge: no agent answers on {args.socket}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(render_status(answer))
    return EXIT_OK if answer.get("ok") else EXIT_FAILURE


def render_status(st: dict[str, Any]) -> str:
    """A terminal view of a status answer."""
    out = [f"gateway {st.get('gateway')}  site {st.get('site')}  up {st.get('uptime_s')} s"]
    up = st.get("uplink", {})
    out.append(
        f"uplink   {up.get('state')}  batches acked {up.get('batches_acked')}  "
        f"readings acked {up.get('readings_acked')}  reconnects {up.get('reconnects')}"
        + (f"  last error: {up['last_error']}" if up.get("last_error") else "")
    )
    ob = st.get("outbox", {})
    out.append(
        f"outbox   {ob.get('readings_waiting')} readings waiting, {ob.get('bytes_waiting')} bytes "
        f"of {ob.get('bound_bytes')}; counters {ob.get('counters')}"
    )
    for name, src in sorted(st.get("sources", {}).items()):
        out.append(f"bus {name}")
        for dev, ds in sorted(src.get("devices", {}).items()):
            err = ds.get("last_error") or ""
            out.append(
                f"  {dev:<16} {ds.get('state', ''):<10} polls {ds.get('polls', 0):>7} "
                f"errors {ds.get('errors_total', 0):>5}  "
                f"rate {ds.get('poll_rate_hz', 0):>5}/s  {err}"
            )
    return "\n".join(out)


def _demo(args: argparse.Namespace) -> int:
    from cityedge.sim.demo import run_demo

    return run_demo(args.workdir, args.seconds)
