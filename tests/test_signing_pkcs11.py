"""PKCS#11 through SoftHSM2: a key made in the token signs batches and never leaves it.

Needs Debian's ``softhsm2`` package and python-pkcs11; skipped (saying which is
missing) only when one of them is absent.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityedge.signing import keys
from cityedge.signing.algorithms import HYBRID
from cityedge.signing.chain import BatchSealer, ChainState
from cityedge.signing.pkcs11_backend import Pkcs11Config, Pkcs11Key
from cityedge.signing.signer_client import SyncSignerClient
from cityedge.signing.verify import Verifier
from tests.peers.softhsm import SoftHsm, find_module, make_token
from tests.test_signing_server import SignerProcess, machine_id

MODULE = find_module()
pytestmark = [
    pytest.mark.skipif(
        MODULE is None, reason="SoftHSM2 missing: install Debian's softhsm2 package"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("pkcs11") is None,
        reason="python-pkcs11 missing: pip install python-pkcs11",
    ),
]


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    assert MODULE is not None
    token = make_token(tmp_path_factory.mktemp("softhsm"), MODULE)
    # The module reads SOFTHSM2_CONF once, when this process first loads it.
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    try:
        yield token
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old


def config(hsm: SoftHsm) -> Pkcs11Config:
    return Pkcs11Config(hsm.module, hsm.token_label, hsm.pin)


@pytest.fixture(scope="module")
def key_dir(hsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kd = tmp_path_factory.mktemp("pkcs11-keys")
    keys.init(kd, pkcs11=config(hsm))
    return kd


def test_key_directory_holds_no_private_part(key_dir: Path) -> None:
    """With a token, the key directory has a reference to the key, never the key."""
    kid = keys.active_key_id(key_dir)
    assert (key_dir / "keys" / f"{kid}.pkcs11").exists()
    assert not list((key_dir / "keys").glob("*.sealed"))
    assert keys.show(key_dir).active.backend == "pkcs11"


def test_private_key_is_not_extractable(hsm: SoftHsm, key_dir: Path) -> None:
    """The token marks the key sensitive and never extractable, and refuses to export it."""
    key = keys.load_active(key_dir, pkcs11=config(hsm))
    assert isinstance(key, Pkcs11Key)
    try:
        assert key.attributes() == {
            "sensitive": True,
            "extractable": False,
            "never_extractable": True,
        }
        assert key.try_export() is None
    finally:
        key.close()


def test_signer_signs_with_the_token_and_batches_verify(
    hsm: SoftHsm, key_dir: Path, tmp_path: Path
) -> None:
    """The signer daemon uses the token key; its batches verify with the token's public key."""
    proc = SignerProcess(
        tmp_path,
        key_dir,
        machine_id(tmp_path),
        extra=[
            *("--pkcs11-module", hsm.module, "--token-label", hsm.token_label),
            *("--pin-file", str(hsm.pin_file)),
        ],
        env=hsm.env(),
    )
    try:
        proc.start()
        with SyncSignerClient(proc.socket) as client:
            assert client.key_info().backend == "pkcs11"
            sealer = BatchSealer(client, "gw-1")
            state = ChainState.fresh()
            payloads = []
            for i in range(5):
                data, state = sealer.seal(b"body %d" % i, state)
                payloads.append(data)
    finally:
        proc.stop()
    public = keys.show(key_dir).active.public
    v = Verifier({"gw-1": [public]}, inspect_bodies=False)
    assert [f for p in payloads for f in v.feed("c/s/gw-1/telemetry", p)] == []
    assert v.report()["gw-1"].verified == 5


def test_rotation_inside_the_token(hsm: SoftHsm, tmp_path: Path) -> None:
    """A token key rotates to a new token key; the old one signs the statement."""
    kd = tmp_path / "keys"
    first = keys.init(kd, pkcs11=config(hsm))
    stmt = keys.rotate(kd, pkcs11=config(hsm))
    assert stmt.verify(first.public)
    assert keys.show(kd).active.public == stmt.new_key


def test_hybrid_is_refused_for_a_token(hsm: SoftHsm, tmp_path: Path) -> None:
    """Tokens hold no ML-DSA keys: asking for hybrid says so."""
    with pytest.raises(keys.KeyStoreError, match="Ed25519 keys only"):
        keys.init(tmp_path, HYBRID, pkcs11=config(hsm))


def test_wrong_pin_exits_78(hsm: SoftHsm, key_dir: Path, tmp_path: Path) -> None:
    """A wrong PIN is bad configuration: the signer exits 78."""
    bad = tmp_path / "pin"
    bad.write_text("000000\n")
    bad.chmod(0o600)
    cmd = [sys.executable, "-m", "cityedge.signing.signer_server", "--key-dir", str(key_dir)]
    cmd += ["--socket", str(tmp_path / "s.sock"), "--allowed-uid", str(os.getuid())]
    cmd += ["--pkcs11-module", hsm.module, "--token-label", hsm.token_label]
    cmd += ["--pin-file", str(bad)]
    proc = subprocess.run(cmd, env=hsm.env(), capture_output=True, timeout=30, check=False)
    assert proc.returncode == 78, proc.stderr
