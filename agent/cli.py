"""The `cityedge` command: what a field technician types.

Every subcommand prints something readable on a terminal; those that report
state take ``--json`` for scripts. Exit codes: 0 fine, 1 failure, 2 usage,
78 bad configuration (systemd does not restart the agent for that one).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
from pathlib import Path

from cityedge import (
    __version__,
    cli_capture,
    cli_drill,
    cli_keys,
    cli_opcua,
    cli_profiles,
    cli_read,
    cli_scan,
    cli_status,
    cli_verify,
    decode,
)
from cityedge.cli_status import render_status
from cityedge.cli_util import DEFAULT_CONFIG, DEFAULT_SOCKET
from cityedge.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

__all__ = ["DEFAULT_SOCKET", "main", "parser", "render_status"]

STOP_TIMEOUT_S = 25.0  # below systemd's default TimeoutStopSec of 90 s


def parser() -> argparse.ArgumentParser:
    """The whole command line (every subcommand)."""
    p = argparse.ArgumentParser(prog="cityedge", description="Smart-city edge gateway agent.")
    p.add_argument("--version", action="version", version=f"cityedge {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="validate a config file and the profiles it names")
    c.add_argument("config", type=Path, help="the TOML config file")
    c.add_argument("--profiles", type=Path, help="profiles folder (default: see docs/config.md)")

    r = sub.add_parser("run", help="run the agent (what the systemd unit starts)")
    r.add_argument(
        "config_file", nargs="?", type=Path, metavar="CONFIG", help="the TOML config file"
    )
    r.add_argument(
        "--config", "-c", type=Path, help=f"the same, as an option (default {DEFAULT_CONFIG})"
    )
    r.add_argument("--profiles", type=Path, help="profiles folder (default: see docs/config.md)")
    r.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")

    cli_status.add_parser(sub)
    cli_read.add_parser(sub)
    cli_profiles.add_parser(sub)
    cli_scan.add_parser(sub)
    cli_opcua.add_parser(sub)
    cli_drill.add_parser(sub)
    cli_keys.add_parser(sub)
    cli_verify.add_parser(sub)
    cli_capture.add_parser(sub)
    decode.add_parser(sub)

    d = sub.add_parser("demo", help="the agent against simulated devices on loopback")
    d.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    d.add_argument("--workdir", type=Path, default=Path("demo-state"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from cityedge import logs

    # Library warnings in cityedge's own format, and none it already handles
    # (`run`, `demo` and the signer configure logging fully themselves).
    logs.route_libraries()
    handler = {
        "check": _check,
        "run": _run,
        "status": cli_status.run,
        "read": cli_read.run,
        "profiles": cli_profiles.run,
        "scan": cli_scan.run,
        "opcua": cli_opcua.run,
        "drill": cli_drill.run,
        "keys": cli_keys.run,
        "verify": cli_verify.run,
        "capture": cli_capture.run,
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

    if args.config_file and args.config and args.config_file != args.config:
        print(
            f"cityedge run: two config files given ({args.config_file} and --config "
            f"{args.config}); give one",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args.config = args.config_file or args.config or DEFAULT_CONFIG
    # Profile updates installed by signed command (<state_dir>/profiles) are
    # taken into account by check_config itself.
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


def _demo(args: argparse.Namespace) -> int:
    from cityedge.sim.demo import run_demo

    return run_demo(args.workdir, args.seconds)
