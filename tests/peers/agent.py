"""Run `cityedge run` as a real process against simulated devices."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cityedge.uplink.codec import decode_batch
from tests.peers.mqtt import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "firmware-profiles"


def write_config(
    path: Path,
    *,
    broker_port: int,
    modbus_port: int,
    units: list[int],
    poll_s: float = 0.1,
    extra_uplink: str = "",
    extra_storage: str = "",
    extra: str = "[signing]\nenabled = false\n",
) -> Path:
    devices = "".join(
        f'\n[[devices]]\nid = "meter-{u}"\nbus = "tcp"\nunit_id = {u}\n'
        f'profile = "eastron/sdm630"\npoll_interval_s = {poll_s}\n'
        for u in units
    )
    path.write_text(
        f'profiles_dir = "{PROFILES}"\n'
        "[site]\n"
        'id = "test-site"\ngateway_id = "gw-test"\nlatitude = 52.5163\nlongitude = 13.3777\n'
        "[buses.tcp]\n"
        f'type = "modbus-tcp"\nhost = "127.0.0.1"\nport = {modbus_port}\ntimeout_s = 0.5\n'
        "[uplink]\n"
        f'broker = "127.0.0.1"\nport = {broker_port}\nbatch_max_age_s = 0.1\n'
        f"batch_max_readings = 200\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n{extra_uplink}"
        "[storage]\n"
        f'path = "{path.parent / "outbox.sqlite"}"\n{extra_storage}' + extra + devices
    )
    return path


@dataclass
class SimProcess:
    """The Modbus simulator in its own process, serving SDM630s."""

    units: list[int]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "cityedge.sim.modbus_sim", "--profile", "eastron/sdm630",
                "--profiles-dir", str(PROFILES), "--port", str(self.port)]  # fmt: skip
        for u in self.units:
            args += ["--unit", str(u)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cityedge", "run", "--config", str(config),
             "--log-format", "json"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip


def wait_ready(sock: Path, within_s: float = 20.0) -> None:
    """Until the agent answers on its control socket (a killed one leaves a stale file)."""
    import asyncio

    from cityedge.control import request

    def answers() -> bool:
        try:
            return bool(asyncio.run(request(sock, "status", timeout_s=2)).get("ok"))
        except (OSError, TimeoutError, ValueError):
            return False

    wait_until(answers, within_s, f"agent answering on {sock}")


def stop_agent(proc: subprocess.Popen[bytes], log: Path, within_s: float = 30.0) -> int:
    """SIGTERM and wait; on a hang, show the agent's last words before failing."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"agent did not stop; log tail:\n{log.read_text()[-6000:]}") from None


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def outbox_seqs(path: Path) -> set[int]:
    """Every reading seq in the outbox file: waiting readings and cut batches."""
    if not path.exists():
        return set()
    db = sqlite3.connect(path)
    try:
        seqs = {int(s) for (s,) in db.execute("SELECT seq FROM readings")}
        for (payload,) in db.execute("SELECT payload FROM batches"):
            doc = decode_batch(payload)
            items = doc.get("readings") or doc.get("alerts") or doc.get("events") or []
            seqs.update(int(r["seq"]) for r in items)
    finally:
        db.close()
    return seqs


def outbox_waiting(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (n,) = db.execute(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM batches)"
        ).fetchone()
    finally:
        db.close()
    return int(n)


def wait_until(pred, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
