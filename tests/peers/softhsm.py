"""A SoftHSM2 token in a temporary folder, initialised by the test.

SoftHSM2 is Debian's ``softhsm2`` package (module
``/usr/lib/softhsm/libsofthsm2.so``, tool ``softhsm2-util``). The token's
configuration lives in a temp ``SOFTHSM2_CONF``, so tests never touch the
machine's tokens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


def find_module() -> str | None:
    """The SoftHSM2 PKCS#11 module, or None when the package is not installed."""
    if shutil.which("softhsm2-util") is None:
        return None
    return next((p for p in MODULE_PATHS if Path(p).exists()), None)


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    module: str
    token_label: str
    pin: str
    pin_file: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def make_token(workdir: Path, module: str, label: str = "cityedge-test") -> SoftHsm:
    """Initialise a fresh token with a random PIN in ``workdir``."""
    tokens = workdir / "tokens"
    tokens.mkdir(parents=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin, so_pin = os.urandom(6).hex(), os.urandom(6).hex()
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            so_pin,
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
        timeout=30,
    )
    pin_file = workdir / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return SoftHsm(conf, module, label, pin, pin_file)
