"""`cityedge scan PORT`: a pymodbus RTU server on a pty serves units 3 and 17; scan finds them."""

from __future__ import annotations

import json
import os
import select
import time

import pytest

from cityedge import cli_scan
from cityedge.cli import main, parser
from cityedge.profiles import Point
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.modbus import async_test, make_profile
from tests.peers.pty import pty_link

PROFILE = make_profile([Point("temperature", "holding", 0, "int16", unit="Cel")])


@async_test
async def test_scan_finds_exactly_units_3_and_17(capsys: pytest.CaptureFixture[str]) -> None:
    """Units 1-24 at 19200 baud: the report lists exactly 3 and 17 (17 with exception 2), exit 0."""
    async with pty_link() as link:
        sim = ModbusSim({3: PROFILE, 17: PROFILE}, serial_port=link.a, baudrate=19200)
        sim.fail(17, "holding", 0, code=2)
        async with sim:
            argv = ["scan", link.b, "--units", "1-24", "--baud", "19200", "--timeout", "0.05"]
            code = await cli_scan.run_async(parser().parse_args(argv))
            out = capsys.readouterr()
            assert await cli_scan.run_async(parser().parse_args([*argv, "--json"])) == 0
            doc = json.loads(capsys.readouterr().out)
    assert code == 0
    units = [line.split()[1] for line in out.out.splitlines() if line.strip().startswith("unit")]
    assert units == ["3", "17"]
    assert "exception 2" in out.out
    # stderr is not a terminal here: one plain line per baud rate, no bar.
    assert out.err.splitlines() == ["scanning 24 unit id(s) at 19200 baud"]
    assert [h["unit_id"] for h in doc["found"]] == [3, 17] and doc["probes"] == 24


@async_test
async def test_nothing_answers_exit_1_with_advice(capsys: pytest.CaptureFixture[str]) -> None:
    """No unit on the line: exit 1 and advice about wiring, parity and baud rates."""
    async with pty_link() as link:
        argv = ["scan", link.b, "--units", "1-3", "--baud", "9600,19200", "--timeout", "0.02"]
        code = await cli_scan.run_async(parser().parse_args(argv))
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["scanning 3 unit id(s) at 9600 baud", "scanning 3 unit id(s) at 19200 baud"]
    assert "no unit answered" in err[-1] and "--parity" in err[-1]


def _drain(fd: int, deadline_s: float = 5.0) -> bytes:
    """All that was written to a pty so far: a pty hands it over in pieces, not in one read."""
    chunks: list[bytes] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if chunks and chunks[-1].endswith(b"\n"):
                break
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the slave is closed and everything has been read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_progress_bar_on_a_terminal() -> None:
    """On a real terminal (a pty) the progress is one redrawn bar line with count and baud rate."""
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            view = cli_scan.ProgressView(tty, units=4)
            for done in range(1, 5):
                view(done, 8, 9600, done)
            view.close()
        drawn = _drain(master).decode()
    finally:
        os.close(master)
    assert drawn.endswith("\n")  # the bar's line is ended once the scan is over
    frames = drawn.rstrip("\r\n").split("\r")
    assert len(frames) == 5
    assert "[###############...............] 4/8  9600 baud  unit   4" in frames[-1]
    assert "scanning" not in drawn


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--baud", "9601"], "--baud takes rates among 1200, 2400"),
        (["--units", "0-5"], "--units: unit ids run from 1 to 247"),
        (["--address", "70000"], "--address must be 0..65535"),
        (["--timeout", "9"], "--timeout must be 0.01..5"),
    ],
)
def test_wrong_options_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """A wrong option: exit 2, and the line says what is allowed."""
    assert main(["scan", "/dev/ttyS0", *argv]) == 2
    assert says in capsys.readouterr().err


def test_missing_port_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that does not exist: exit 1, naming it and what to check."""
    assert main(["scan", "/dev/ttyNOPE", "--units", "1", "--baud", "9600"]) == 1
    err = capsys.readouterr().err
    assert "/dev/ttyNOPE" in err and "dialout" in err
