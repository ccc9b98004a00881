"""The unit files in systemd/: systemd itself checks them (verify, offline security review).

``systemd-analyze verify`` refuses a unit whose ExecStart/ExecReload binary
does not exist, and on a development box ``/usr/bin/cityedge`` does not. So
each check builds a throwaway root (``--root``): systemd's own unit library
copied from the host (verify resolves dependencies such as sysinit.target
there), our unit in ``etc/systemd/system``, and an empty executable stub at
every path the unit executes. Nothing outside ``tmp_path`` is touched.

No systemd needs to be running. The tests skip (saying why) only when
``systemd-analyze`` is not installed; ``dev.sh test`` installs Debian's
``systemd`` package, which provides it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cityedge.errors import EXIT_CONFIG

UNIT_DIR = Path(__file__).resolve().parent.parent / "systemd"
HOST_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.0
# systemd 252 takes the threshold in tenths (exposure 0..100): 20 means 2.0.
THRESHOLD = int(MAX_EXPOSURE * 10)

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)"
)


def unit_files() -> list[Path]:
    return sorted(UNIT_DIR.glob("*.service"))


def executed_paths(unit: Path) -> set[str]:
    """The absolute paths of the programs a unit runs (Exec*= lines)."""
    paths = set()
    for line in unit.read_text().splitlines():
        m = re.match(r"\s*Exec\w+=\s*[-@:+!]*(\S+)", line)
        if m and m.group(1).startswith("/"):
            paths.add(m.group(1))
    return paths


def fake_root(tmp_path: Path, unit: Path) -> Path:
    """A filesystem root holding systemd's unit library, ``unit`` and stubs of its programs."""
    root = tmp_path / "root"
    lib = root / HOST_UNITS.relative_to("/")
    shutil.copytree(HOST_UNITS, lib, symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for other in unit_files():  # sibling units: After=cityedge-signer.service resolves
        shutil.copy(other, etc / other.name)
    shutil.copy(unit, etc / unit.name)
    for path in executed_paths(unit):
        stub = root / path.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def test_agent_unit_exists() -> None:
    """The agent's unit is in systemd/ (the signer's joins it when written)."""
    assert (UNIT_DIR / "cityedge.service").is_file()


@pytest.mark.parametrize("unit", unit_files(), ids=lambda p: p.name)
def test_verify_is_clean(unit: Path, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a single warning."""
    root = fake_root(tmp_path, unit)
    out = analyze("verify", "--man=no", f"--root={root}", unit.name)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


@pytest.mark.parametrize("unit", unit_files(), ids=lambda p: p.name)
def test_security_exposure_at_most_2(unit: Path) -> None:
    """The offline security review scores the unit's exposure at most 2.0."""
    out = analyze("security", "--offline=true", f"--threshold={THRESHOLD}", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check is not vacuous: a misspelt setting fails it."""
    broken = tmp_path / "src" / "cityedge.service"
    broken.parent.mkdir()
    broken.write_text(
        (UNIT_DIR / "cityedge.service").read_text().replace("Type=notify", "Type=notifyy")
    )
    root = fake_root(tmp_path, broken)
    out = analyze("verify", "--man=no", f"--root={root}", broken.name)
    assert "notifyy" in out.stdout + out.stderr


def test_agent_unit_settings() -> None:
    """The agent's unit keeps what the agent relies on: notify, watchdog, exit 78, user."""
    text = (UNIT_DIR / "cityedge.service").read_text()
    settings = {
        "Type": "notify",
        "NotifyAccess": "main",
        "RestartPreventExitStatus": str(EXIT_CONFIG),
        "User": "cityedge",
        "SupplementaryGroups": "dialout cityedge-signer",
        "StateDirectory": "cityedge",
        "ConfigurationDirectory": "cityedge",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in settings.items():
        assert re.search(rf"^{key}={re.escape(value)}$", text, re.M), key
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
