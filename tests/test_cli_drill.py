"""`cityedge drill` against the fake agent of test_ops_drill behind a real control socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityedge import cli_drill
from cityedge.cli import main, parser
from tests.test_ops_drill import FakeAgent, serving

FAST = ["--cut-s", "0.15", "--step-timeout-s", "1", "--poll-s", "0.02"]


async def test_healthy_agent_passes_and_report_is_filed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Every step passes: exit 0, the text report says PASSED and is written to --out."""
    report = tmp_path / "drill.txt"
    async with serving(FakeAgent()) as sock:
        argv = ["drill", "--socket", str(sock), *FAST, "--out", str(report)]
        code = await cli_drill.run_async(parser().parse_args(argv))
    out = capsys.readouterr()
    assert code == 0, out.out
    assert "PASSED: 4 passed, 0 failed, 0 skipped" in out.out
    assert report.read_text() == out.out
    assert f"report written to {report}" in out.err


async def test_broken_promise_exit_1_json(capsys: pytest.CaptureFixture[str]) -> None:
    """An agent that raises no alert: exit 1; the JSON report names the failed step."""
    async with serving(FakeAgent(broken="no_alert")) as sock:
        argv = ["drill", "--socket", str(sock), *FAST, "--steps", "device_silent", "--json"]
        code = await cli_drill.run_async(parser().parse_args(argv))
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["passed"] is False
    assert [(s["name"], s["outcome"]) for s in doc["steps"]] == [("device_silent", "fail")]


async def test_chosen_steps_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    """--steps runs those steps in that order; --device picks the device to silence."""
    agent = FakeAgent()
    async with serving(agent) as sock:
        argv = ["drill", "--socket", str(sock), *FAST, "--json",
                "--steps", "uplink_cut,device_silent", "--device", "pump-2"]  # fmt: skip
        code = await cli_drill.run_async(parser().parse_args(argv))
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["name"] for s in doc["steps"]] == ["uplink_cut", "device_silent"]
    assert doc["steps"][1]["details"]["device"] == "pump-2"


def test_no_agent_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No agent on the socket: exit 1 and a line saying so."""
    assert main(["drill", "--socket", str(tmp_path / "none.sock"), *FAST]) == 1
    assert "no answer from the agent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--steps", "flood"], "--steps must be among uplink_cut, signer_restart"),
        (["--cut-s", "0"], "--cut-s must be above 0"),
    ],
)
def test_wrong_options_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """A wrong step name or duration: exit 2, saying what is allowed."""
    assert main(["drill", *argv]) == 2
    assert says in capsys.readouterr().err
