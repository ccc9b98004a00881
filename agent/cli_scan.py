"""``cityedge scan PORT``: which Modbus RTU unit ids answer on a serial line, at which baud rate.

Wraps :func:`cityedge.scan.scan_rtu`. While it runs, a progress bar is drawn
on standard error when that is a terminal; otherwise (a log, a pipe) one
plain line per baud rate. ``cityedge scan opc.tcp://host:port`` lists an OPC
UA server's endpoints instead (the same as ``cityedge opcua endpoints``).

Exit codes: 0 when at least one unit answered, 1 when none did (or the port
failed), 2 for a wrong option.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

from cityedge.cli_util import UsageError, add_json, print_json, say
from cityedge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
BAR_WIDTH = 30


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "scan",
        help="find Modbus RTU unit ids and baud rates on a serial port (or OPC UA endpoints)",
        description="Probe each unit id at each baud rate for one register. Stop the agent "
        "first if it polls this line: two masters on one RS-485 line collide.",
    )
    s.add_argument(
        "port", metavar="PORT", help="serial port (/dev/ttyUSB0), or opc.tcp://host:port"
    )
    s.add_argument("--units", default="1-247", help="unit ids: 1-247, or a list like 1-10,17")
    s.add_argument(
        "--baud",
        default="9600,19200",
        help=f"baud rates to try, comma-separated, among {', '.join(map(str, BAUDRATES))}",
    )
    s.add_argument("--parity", choices=("N", "E", "O"), default="N", help="default N")
    s.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="default 1")
    s.add_argument("--register", choices=("holding", "input"), default="holding")
    s.add_argument("--address", type=int, default=0, help="register address 0..65535 (default 0)")
    s.add_argument("--timeout", type=float, default=0.1, help="seconds per probe (default 0.1)")
    add_json(s)


def parse_baudrates(text: str) -> list[int]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or int(part) not in BAUDRATES:
            raise UsageError(
                f"--baud takes rates among {', '.join(map(str, BAUDRATES))} (got {part!r})"
            )
        out.append(int(part))
    if not out:
        raise UsageError("--baud needs at least one rate, like 9600,19200")
    return out


class ProgressView:
    """Draws scan progress on a stream: a bar on a terminal, else a line per baud rate."""

    def __init__(self, stream: IO[str], units: int) -> None:
        self.stream = stream
        self.units = units
        self.tty = stream.isatty()
        self._baud: int | None = None

    def __call__(self, done: int, total: int, baudrate: int, unit: int) -> None:
        if baudrate != self._baud:
            self._baud = baudrate
            if not self.tty:
                print(f"scanning {self.units} unit id(s) at {baudrate} baud", file=self.stream)
        if self.tty:
            filled = BAR_WIDTH * done // max(total, 1)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{total}  {baudrate} baud  unit {unit:>3}")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._baud is not None:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_async(args))
    except KeyboardInterrupt:
        say("scan", "interrupted")
        return EXIT_FAILURE


async def run_async(args: argparse.Namespace) -> int:
    if args.port.startswith("opc.tcp://"):
        from cityedge import cli_opcua

        ns = argparse.Namespace(opcua_cmd="endpoints", url=args.port, timeout=4.0, json=args.json)
        return await cli_opcua.run_async(ns)
    from cityedge.scan import parse_units

    try:
        units = parse_units(args.units)
        baudrates = parse_baudrates(args.baud)
        if not 0 <= args.address <= 0xFFFF:
            raise UsageError(f"--address must be 0..65535 (got {args.address})")
        if not 0.01 <= args.timeout <= 5:
            raise UsageError(f"--timeout must be 0.01..5 seconds (got {args.timeout})")
    except ValueError as exc:  # UsageError, or parse_units' message
        say("scan", f"--units: {exc}" if not isinstance(exc, UsageError) else str(exc))
        return EXIT_USAGE
    return await _scan(args, units, baudrates)


async def _scan(args: argparse.Namespace, units: list[int], baudrates: list[int]) -> int:
    from cityedge.errors import TransientError
    from cityedge.scan import render_scan, scan_rtu

    view = ProgressView(sys.stderr, len(units))
    try:
        result = await scan_rtu(
            args.port,
            units=units,
            baudrates=baudrates,
            parity=args.parity,
            stopbits=args.stopbits,
            register=args.register,
            address=args.address,
            timeout_s=args.timeout,
            progress=view,
        )
    except TransientError as exc:
        view.close()
        say(
            "scan",
            f"{exc} (check the port name, e.g. ls /dev/ttyUSB* /dev/ttyAMA*, "
            "and that you are in group dialout)",
        )
        return EXIT_FAILURE
    view.close()
    if args.json:
        print_json(result.as_dict())
    else:
        print(render_scan(result))
    if not result.hits:
        say(
            "scan",
            "no unit answered: check the A/B wiring, termination, parity "
            "(--parity) and the baud rates (--baud)",
        )
        return EXIT_FAILURE
    return EXIT_OK
