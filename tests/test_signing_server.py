"""The signer daemon as a real process on a Unix socket, and its clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityedge.signing import keys
from cityedge.signing.algorithms import ED25519, HYBRID, PublicKey
from cityedge.signing.chain import BatchSealer, ChainState
from cityedge.signing.envelope import open_envelope
from cityedge.signing.protocol import (
    FRAME,
    MAX_REQUEST,
    ProtocolError,
    SignerError,
    SignerUnavailable,
    parse_request,
)
from cityedge.signing.signer_client import SignerClient, SyncSignerClient
from cityedge.signing.signer_server import SignerService
from cityedge.signing.verify import Verifier

DIGEST = bytes(range(64))


@dataclass
class SignerProcess:
    """``python -m cityedge.signing.signer_server`` started and stopped by a test."""

    workdir: Path
    key_dir: Path
    machine_id: Path
    allowed: list[int] = field(default_factory=lambda: [os.getuid()])
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "signer.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "signer.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cityedge.signing.signer_server"]
        cmd += ["--key-dir", str(self.key_dir), "--socket", str(self.socket)]
        cmd += ["--machine-id-file", str(self.machine_id), "--log-level", "debug"]
        for uid in self.allowed:
            cmd += ["--allowed-uid", str(uid)]
        return cmd + self.extra

    def start(self, timeout_s: float = 15.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, env=self.env or os.environ.copy()
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signer exited {self.proc.returncode}: {self.log.read_text()}")
            if self.socket.exists():
                with (
                    contextlib.suppress(OSError),
                    socket.socket(socket.AF_UNIX) as s,
                ):
                    s.connect(str(self.socket))
                    return
            time.sleep(0.02)
        raise TimeoutError(f"signer did not listen: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def machine_id(tmp_path: Path) -> Path:
    path = tmp_path / "machine-id"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return path


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[SignerProcess]:
    mid = machine_id(tmp_path)
    keys.init(tmp_path / "keys", ED25519, machine_id_file=mid)
    proc = SignerProcess(tmp_path, tmp_path / "keys", mid)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def test_signs_for_an_allowed_uid(signer: SignerProcess) -> None:
    """The caller's uid is allowed: key info matches the key directory, signatures verify."""
    with SyncSignerClient(signer.socket) as client:
        info = client.key_info()
        assert info.public == keys.show(signer.key_dir).active.public
        assert info.backend == "sealed"
        sigs = client.sign(DIGEST, info.key_id)
        assert info.public.verify(DIGEST, sigs)
        doc = client.public_keys()
        assert doc["active"] == info.key_id.hex() and len(doc["keys"]) == 1
    assert stat.S_IMODE(signer.socket.stat().st_mode) == 0o660


def test_batches_sealed_through_the_signer_verify(signer: SignerProcess) -> None:
    """BatchSealer over the daemon produces a chain the verifier accepts."""
    with SyncSignerClient(signer.socket) as client:
        sealer = BatchSealer(client, "gw-1")
        state = ChainState.fresh()
        payloads = []
        for i in range(5):
            data, state = sealer.seal(b"body %d" % i, state)
            payloads.append(data)
        public = client.key_info().public
    v = Verifier({"gw-1": [public]}, inspect_bodies=False)
    assert [f for p in payloads for f in v.feed("c/s/gw-1/telemetry", p)] == []
    assert v.report()["gw-1"].verified == 5


def test_refuses_a_uid_not_allowed(tmp_path: Path) -> None:
    """A caller whose uid is not on the list is refused, and the refusal is logged."""
    mid = machine_id(tmp_path)
    keys.init(tmp_path / "keys", machine_id_file=mid)
    not_me = 65534 if os.getuid() != 65534 else 65533
    proc = SignerProcess(tmp_path, tmp_path / "keys", mid, allowed=[not_me])
    try:
        proc.start()
        with SyncSignerClient(proc.socket) as client, pytest.raises(SignerError) as err:
            client.key_info()
        assert err.value.reason == "forbidden"
    finally:
        proc.stop()
    assert f'"uid": {os.getuid()}' in proc.log.read_text()
    assert "signer_refused_peer" in proc.log.read_text()


def raw_call(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        head = s.recv(4, socket.MSG_WAITALL)
        (n,) = FRAME.unpack(head)
        return s.recv(n, socket.MSG_WAITALL)


def test_survives_garbage(signer: SignerProcess) -> None:
    """Oversized, empty, unknown and short requests get errors; the signer keeps serving."""
    assert raw_call(signer.socket, FRAME.pack(1 << 30)) == b"\x01too_large"
    assert raw_call(signer.socket, FRAME.pack(0)) == b"\x01bad_request"
    assert raw_call(signer.socket, FRAME.pack(1) + b"\x7f") == b"\x01unknown_op"
    assert raw_call(signer.socket, FRAME.pack(3) + b"\x01ab") == b"\x01bad_request"
    with socket.socket(socket.AF_UNIX) as s:  # a torn frame, then hang up
        s.connect(str(signer.socket))
        s.sendall(FRAME.pack(97) + b"\x01" * 10)
    with SyncSignerClient(signer.socket) as client:
        info = client.key_info()
        with pytest.raises(SignerError) as err:
            client.sign(DIGEST, bytes(32))
        assert err.value.reason == "unknown_key"
        assert info.public.verify(DIGEST, client.sign(DIGEST, info.key_id))
        doc = client.public_keys()
    assert doc["active"] == info.key_id.hex()


def test_stopped_signer_is_unavailable_then_comes_back(signer: SignerProcess) -> None:
    """Signer stopped: SignerUnavailable, quickly; restarted: the same client signs again."""
    client = SyncSignerClient(signer.socket, timeout_s=1.0)
    sealer = BatchSealer(client, "gw-1")
    state = ChainState.fresh()
    _, state = sealer.seal(b"one", state)
    signer.stop()
    started = time.monotonic()
    with pytest.raises(SignerUnavailable):
        sealer.seal(b"two", state)
    assert time.monotonic() - started < 1.0
    signer.start()
    data, state2 = sealer.seal(b"two", state)
    assert open_envelope(data).header.seq == 2 and state2.seq == 2
    client.close()


async def test_async_client_and_reconnect(signer: SignerProcess) -> None:
    """The asyncio client signs, raises SignerUnavailable while the signer is down, recovers."""
    async with SignerClient(signer.socket, timeout_s=1.0) as client:
        info = await client.key_info()
        assert info.public.verify(DIGEST, await client.sign(DIGEST, info.key_id))
        await asyncio.to_thread(signer.stop)
        with pytest.raises(SignerUnavailable):
            await client.sign(DIGEST, info.key_id)
        await asyncio.to_thread(signer.start)
        assert info.public.verify(DIGEST, await client.sign(DIGEST, info.key_id))
        assert (await client.public_keys())["active"] == info.key_id.hex()


def test_rotation_is_picked_up_while_running(signer: SignerProcess) -> None:
    """keys rotate under a running signer: the next batch names the new key, the chain holds."""
    with SyncSignerClient(signer.socket) as client:
        sealer = BatchSealer(client, "gw-1")
        first = client.key_info().public
        data1, state = sealer.seal(b"before", ChainState.fresh())
        keys.rotate(signer.key_dir, HYBRID, machine_id_file=signer.machine_id)
        data2, state = sealer.seal(b"after", state)
        doc = client.public_keys()
    assert open_envelope(data2).header.algorithm == HYBRID
    rotations = [base64.b64decode(r) for r in doc["rotations"]]
    v = Verifier({"gw-1": [first]}, rotations, inspect_bodies=False)
    assert v.feed("t", data1) + v.feed("t", data2) == []
    assert PublicKey.from_text(doc["keys"][-1]).algorithm == HYBRID


def test_missing_key_exits_78(tmp_path: Path) -> None:
    """No key in the key directory: exit 78 (bad configuration), with the reason logged."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cityedge.signing.signer_server",
            "--key-dir",
            str(tmp_path / "none"),
            "--socket",
            str(tmp_path / "s.sock"),
            "--allowed-uid",
            str(os.getuid()),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 78
    assert b"keys init" in proc.stderr


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_REQUEST + 40))
def test_fuzz_request_parser(payload: bytes) -> None:
    """Random request payloads parse or raise ProtocolError with a known reason only."""
    try:
        req = parse_request(payload)
    except ProtocolError as exc:
        assert exc.reason in ("bad_request", "too_large", "unknown_op")
    else:
        assert req.op in (1, 2, 3)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> SignerService:
    tmp = tmp_path_factory.mktemp("svc")
    mid = machine_id(tmp)
    keys.init(tmp / "keys", machine_id_file=mid)
    svc = SignerService(tmp / "keys", [os.getuid()], machine_id_file=mid)
    svc.load()
    return svc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_service_handle(service: SignerService, payload: bytes) -> None:
    """The signer answers any request payload with one well-formed frame, never raising."""
    frame = service.handle(b"\x01" + payload[:96] if payload[:1] == b"\x00" else payload)
    (n,) = FRAME.unpack_from(frame)
    assert len(frame) == 4 + n and frame[4] in (0, 1)
