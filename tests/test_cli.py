"""The `cityedge` command as a technician runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers.agent import write_config

SHIPPED = Path(__file__).resolve().parents[1] / "firmware-profiles"

REPO = Path(__file__).resolve().parents[1]


def cityedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cityedge", *args], capture_output=True, text=True, timeout=60
    )


def test_check_accepts_the_example() -> None:
    """The shipped example config checks clean."""
    out = cityedge("check", str(REPO / "examples" / "gateway.toml"), "--profiles",
                   str(REPO / "firmware-profiles"))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


def test_check_names_every_mistake_with_its_line(tmp_path: Path) -> None:
    """Several mistakes: each printed as FILE:LINE: field: what (allowed; got), exit 78."""
    cfg = write_config(tmp_path / "gw.toml", broker_port=1883, modbus_port=502, units=[1])
    text = cfg.read_text()
    text = text.replace("timeout_s = 0.5\n", "timeout_s = 0.5\nbaudrat = 9600\n", 1)
    text = text.replace('bus = "tcp"', 'bus = "rs485"')
    text = text.replace("poll_interval_s = 0.1", 'poll_interval_s = "fast"')
    cfg.write_text(text)
    lines = text.splitlines()

    def line_of(needle: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if needle in line)

    out = cityedge("check", str(cfg))
    assert out.returncode == 78
    printed = out.stdout.splitlines()
    expect = [
        (line_of("baudrat"), "buses.tcp.baudrat"),
        (line_of('bus = "rs485"'), "devices[0].bus"),
        (line_of("poll_interval_s"), "devices[0].poll_interval_s"),
    ]
    for line, field in expect:
        assert any(p.startswith(f"{cfg}:{line}: {field}: ") for p in printed), (
            line,
            field,
            printed,
        )


def test_run_takes_the_config_as_an_argument_or_an_option(tmp_path: Path) -> None:
    """`cityedge run FILE` (docs/config.md) and `--config FILE` (the unit) both read FILE."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[site]\nid = 'x'\n")
    given = (("run", str(cfg)), ("run", "--config", str(cfg)), ("run", str(cfg), "-c", str(cfg)))
    for args in given:
        out = cityedge(*args)
        assert out.returncode == 78 and f"{cfg}:" in out.stderr, (args, out.stderr)
    other = tmp_path / "other.toml"
    out = cityedge("run", str(cfg), "--config", str(other))
    assert out.returncode == 2 and "two config files given" in out.stderr


def test_run_refuses_a_bad_config_with_exit_78(tmp_path: Path) -> None:
    """`cityedge run` on a bad config exits 78 (systemd's RestartPreventExitStatus) and says why."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[site]\nid = 'x'\n")
    out = cityedge("run", "--config", str(cfg))
    assert out.returncode == 78
    assert "gateway_id" in out.stderr


def test_profiles_lists_what_a_config_can_name_and_flags_a_broken_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cityedge.cli import main

    good = (SHIPPED / "eastron" / "sdm630.toml").read_text()
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "good.toml").write_text(good)
    (tmp_path / "acme" / "bad.toml").write_text(good.replace('type = "float32"', 'type = "f32"', 1))
    assert main(["profiles", "--profiles", str(tmp_path)]) == 78
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["profile", "from", "protocol", "family", "codec", "values"]
    assert out[1].startswith("acme/bad") and "f32" in out[1]
    assert out[2].startswith("acme/good") and out[2].split()[2:] == ["modbus", "energy", "-", "93"]
    assert main(["profiles"]) == 0  # the shipped ones (no /etc/cityedge here) all load
    assert "eastron/sdm630" in capsys.readouterr().out
