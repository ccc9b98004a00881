"""The key directory: init, sealing at rest, show, rotate with cross-signature, CSR."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from cityedge.signing import keys
from cityedge.signing.algorithms import ED25519, HYBRID, SoftwareKey
from cityedge.signing.envelope import open_rotation


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    path = tmp_path / "machine-id"
    path.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("algorithm", [ED25519, HYBRID])
def test_init_seals_the_key_at_rest(tmp_path: Path, machine: Path, algorithm: str) -> None:
    """init writes a 0600 sealed key that unseals to the same key and holds no clear seed."""
    kd = tmp_path / "keys"
    record = keys.init(kd, algorithm, machine_id_file=machine)
    kid = record.public.key_id.hex()
    sealed = kd / "keys" / f"{kid}.sealed"
    assert (mode(kd), mode(kd / "salt"), mode(sealed)) == (0o700, 0o600, 0o600)
    key = keys.load_active(kd, machine_id_file=machine)
    assert isinstance(key, SoftwareKey)
    assert key.public == record.public
    assert key.seeds()[:32] not in sealed.read_bytes()
    assert (kd / "current").read_text().strip() == kid


def test_sealed_key_is_bound_to_the_machine_and_salt(tmp_path: Path, machine: Path) -> None:
    """Another machine id, or another install's salt, cannot unseal the key."""
    kd = tmp_path / "keys"
    keys.init(kd, machine_id_file=machine)
    other = tmp_path / "other-id"
    other.write_text("0" * 32)
    with pytest.raises(keys.KeyStoreError, match="another machine"):
        keys.load_active(kd, machine_id_file=other)
    (kd / "salt").write_bytes(b"\x00" * 32)
    with pytest.raises(keys.KeyStoreError, match="another machine"):
        keys.load_active(kd, machine_id_file=machine)
    (kd / "salt").unlink()
    with pytest.raises(keys.KeyStoreError, match="salt"):
        keys.load_active(kd, machine_id_file=machine)


def test_init_refuses_an_initialised_directory(tmp_path: Path, machine: Path) -> None:
    """A second init must not silently replace the gateway's identity."""
    keys.init(tmp_path, machine_id_file=machine)
    with pytest.raises(keys.KeyStoreError, match="rotate"):
        keys.init(tmp_path, machine_id_file=machine)


def test_missing_directory_says_run_init(tmp_path: Path) -> None:
    """Loading from an empty directory tells the operator what to run."""
    with pytest.raises(keys.KeyStoreError, match="keys init"):
        keys.load_active(tmp_path)


def test_rotate_cross_signs_and_switches(tmp_path: Path, machine: Path) -> None:
    """rotate: the old key signs the new (hybrid) one, which countersigns and becomes active."""
    first = keys.init(tmp_path, machine_id_file=machine)
    stmt = keys.rotate(tmp_path, HYBRID, machine_id_file=machine)
    assert stmt.verify(first.public)
    assert open_rotation(keys.rotations(tmp_path)[0]) == stmt
    new = keys.load_active(tmp_path, machine_id_file=machine)
    assert new.public == stmt.new_key and new.algorithm == HYBRID
    info = keys.show(tmp_path)
    assert [k.active for k in info.keys] == [False, True]
    assert info.active.public == new.public
    doc = info.to_json()
    assert doc["rotations"][0]["old_key_id"] == first.public.key_id.hex()
    assert [p.key_id for p in keys.public_keys(tmp_path)] == [first.public.key_id, new.key_id]


def test_csr_uses_a_separate_tls_key(tmp_path: Path, machine: Path) -> None:
    """The CSR has its own P-256 key (0600), the subject, and names the signing key."""
    record = keys.init(tmp_path / "sig", machine_id_file=machine)
    tls = tmp_path / "tls"
    res = keys.csr(
        tls,
        "CN=gw-0001,O=City",
        signing_key_id=record.public.key_id,
        dns_names=["gw-0001.city.example"],
    )
    req = x509.load_pem_x509_csr(res.csr_pem)
    assert req.is_signature_valid
    cn = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "gw-0001"
    san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [f"urn:cityedge:signing-key:{record.public.key_id.hex()}"]
    assert mode(res.key_path) == 0o600 and res.new_key
    again = keys.csr(tls, "gw-0001")
    assert not again.new_key
    assert x509.load_pem_x509_csr(again.csr_pem).public_key() == req.public_key()
