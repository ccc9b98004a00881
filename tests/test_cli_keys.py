"""`cityedge keys init|show|rotate|csr` on a key directory in a temp folder and a SoftHSM2 token."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from cityedge.cli import main
from cityedge.cli_verify import load_keys_file
from cityedge.signing import keys
from cityedge.signing.algorithms import PublicKey
from cityedge.signing.envelope import open_rotation
from tests.peers.softhsm import find_module, make_token


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    m = tmp_path / "machine-id"
    m.write_text("0123456789abcdef0123456789abcdef\n")
    return m


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_prints_the_key_and_refuses_twice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, machine: Path
) -> None:
    """init makes a sealed Ed25519 key and prints id, fingerprint and public line; again: 78."""
    kd = tmp_path / "kd"
    common = ["--key-dir", str(kd), "--machine-id-file", str(machine)]
    code, out, _ = cli(capsys, "keys", "init", *common)
    assert code == 0
    kid = keys.active_key_id(kd)
    assert f"key id      {kid}" in out and "(sealed)" in out
    public = next(line.split()[1:] for line in out.splitlines() if "public" in line)
    assert PublicKey.from_text(" ".join(public)).key_id.hex() == kid
    code, _, err = cli(capsys, "keys", "init", *common)
    assert code == 78 and "already has a key; use 'cityedge keys rotate'" in err


def test_show_rotate_show(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, machine: Path
) -> None:
    """rotate to hybrid prints a statement the old key signed; show then lists both keys."""
    kd = tmp_path / "kd"
    common = ["--key-dir", str(kd), "--machine-id-file", str(machine)]
    assert cli(capsys, "keys", "init", *common)[0] == 0
    old = keys.show(kd).active.public
    code, out, _ = cli(capsys, "keys", "rotate", *common, "--algorithm", "ed25519+mldsa65")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("rotation "))
    stmt = open_rotation(base64.b64decode(line.split()[1]))
    assert stmt.verify(old) and stmt.new_key.algorithm == "ed25519+mldsa65"
    code, out, _ = cli(capsys, "keys", "show", "--key-dir", str(kd), "--json", "--gateway", "gw-1")
    doc = json.loads(out)
    assert code == 0
    assert [k["active"] for k in doc["keys"]] == [False, True]
    assert doc["rotations"][0]["new_key_id"] == stmt.new_key.key_id.hex()
    assert doc["keys_file"][0] == f"gw-1 {old.to_text()}"
    assert doc["keys_file"][-1] == line
    keys_file = tmp_path / "hub.keys"
    keys_file.write_text("\n".join(doc["keys_file"]) + "\n")
    trusted = load_keys_file(keys_file)  # what show prints, verify reads
    assert len(trusted.keys["gw-1"]) == 2 and len(trusted.rotations) == 1
    code, out, _ = cli(capsys, "keys", "show", "--key-dir", str(kd))
    assert out.count("ACTIVE") == 1 and "rotation " in out


def test_csr_names_the_signing_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, machine: Path
) -> None:
    """csr writes client.csr with the DNS names and the signing key's URI, and says where."""
    kd, tls = tmp_path / "kd", tmp_path / "tls"
    cli(capsys, "keys", "init", "--key-dir", str(kd), "--machine-id-file", str(machine))
    code, out, _ = cli(capsys, "keys", "csr", "--key-dir", str(kd), "--tls-dir", str(tls),
                       "--subject", "CN=gw-1,O=City", "--dns", "gw-1.city.example")  # fmt: skip
    assert code == 0
    assert f"written to {tls / 'client.csr'}" in out
    req = x509.load_pem_x509_csr((tls / "client.csr").read_bytes())
    san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw-1.city.example"]
    uri = f"urn:cityedge:signing-key:{keys.active_key_id(kd)}"
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["show"], 78, "run 'cityedge keys init'"),
        (["init", "--pkcs11-module", "/x.so"], 2, "needs all of --pkcs11-module, --token-label"),
        (["csr", "--subject", "CN=a,,=b"], 2, "--subject"),
    ],
)
def test_problems_say_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], code: int, says: str
) -> None:
    """An empty key directory, a half-given token, a bad subject: the exit code and what to do."""
    kd = tmp_path / "kd"
    if argv[0] == "csr":
        argv = [*argv, "--no-signing-key", "--tls-dir", str(tmp_path / "tls")]
    got, _, err = cli(capsys, "keys", argv[0], "--key-dir", str(kd), *argv[1:])
    assert (got, says in err) == (code, True), err


@pytest.mark.skipif(
    find_module() is None or importlib.util.find_spec("pkcs11") is None,
    reason="SoftHSM2 or python-pkcs11 missing (Debian softhsm2, pip python-pkcs11)",
)
def test_init_in_a_softhsm_token(tmp_path: Path) -> None:
    """With a token the key is made in it (backend pkcs11); hybrid in a token is refused (2)."""
    module = find_module()
    assert module is not None
    hsm = make_token(tmp_path / "hsm", module)
    token = ["--pkcs11-module", module, "--token-label", hsm.token_label,
             "--pin-file", str(hsm.pin_file), "--key-dir", str(tmp_path / "kd")]  # fmt: skip

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        # A process of its own: SoftHSM2 reads SOFTHSM2_CONF once per process.
        return subprocess.run([sys.executable, "-m", "cityedge", "keys", *argv], env=hsm.env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    refused = run("init", *token, "--algorithm", "ed25519+mldsa65")
    assert refused.returncode == 2 and "ed25519 keys only" in refused.stderr
    made = run("init", *token, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["backend"] == "pkcs11"
    assert not list((tmp_path / "kd" / "keys").glob("*.sealed"))
