"""The signer's key directory: generation, sealing at rest, rotation, CSR.

These are the functions behind ``cityedge keys init | show | rotate | csr``.
Run them as the signer's user (``cityedge-signer``): the key directory is its
systemd StateDirectory and nobody else can read it.

Layout of a key directory (docs/security.md)::

    salt                per-install random salt for the sealing key (0600)
    current             hex key id of the active key
    keys/<id>.pub       public key line "<algorithm> <base64>" (0644)
    keys/<id>.sealed    sealed private seeds (0600), or
    keys/<id>.pkcs11    JSON reference to a key in a token (no secret)
    rotations/NNNN-<id>.rot   rotation statements, oldest first (0644)

Sealing: AES-256-GCM under HKDF-SHA256(/etc/machine-id, salt). It keeps the
key file useless on its own (a copied file, a backup of the key folder
without the salt, another machine); it does not stop root or the signer's
user on this machine. docs/security.md says exactly what it protects.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from cityedge.signing.algorithms import (
    ALG_BY_CODE,
    ALG_CODES,
    ED25519,
    PublicKey,
    SoftwareKey,
    check_algorithm,
)
from cityedge.signing.envelope import (
    EnvelopeError,
    RotationStatement,
    digest_of,
    open_rotation,
    rotation_signed_part,
)
from cityedge.signing.pkcs11_backend import Pkcs11Config, Pkcs11Key
from cityedge.signing.pkcs11_backend import generate as pkcs11_generate

MACHINE_ID = Path("/etc/machine-id")
SEAL_MAGIC = b"CESK"
SEAL_VERSION = 1
_SEAL_HEAD = struct.Struct(">4sBB32s12s")  # magic, version, alg, key id, nonce
HKDF_INFO = b"cityedge sealed signing key v1"
SALT_SIZE = 32


class KeyStoreError(Exception):
    """A key directory problem the operator must fix (message says what)."""


class SigningKey(Protocol):
    """A private key the signer can use: in memory (sealed at rest) or in a token."""

    algorithm: str
    public: PublicKey

    @property
    def key_id(self) -> bytes: ...

    def sign_digest(self, digest: bytes) -> tuple[bytes, ...]: ...


@dataclass(frozen=True, slots=True)
class KeyRecord:
    public: PublicKey
    backend: str  # "sealed" or "pkcs11"
    active: bool
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.public.key_id.hex(),
            "fingerprint": self.public.fingerprint,
            "algorithm": self.public.algorithm,
            "public": self.public.to_text(),
            "backend": self.backend,
            "active": self.active,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
        }


@dataclass(frozen=True, slots=True)
class KeyDirInfo:
    """What ``cityedge keys show`` prints."""

    active: KeyRecord
    keys: list[KeyRecord]
    rotations: list[RotationStatement] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active.public.key_id.hex(),
            "keys": [k.to_json() for k in self.keys],
            "rotations": [
                {
                    "old_key_id": r.old_key_id.hex(),
                    "new_key_id": r.new_key.key_id.hex(),
                    "created": r.created,
                }
                for r in self.rotations
            ],
        }


# -- files -------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic write with the final mode from the start (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _mkdirs(key_dir: Path) -> None:
    for d in (key_dir, key_dir / "keys", key_dir / "rotations"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)


def read_machine_id(path: Path = MACHINE_ID) -> bytes:
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read the machine id: {exc.strerror}") from exc
    if len(value) < 16:
        raise KeyStoreError(f"{path}: machine id too short to bind a key to")
    return value


def sealing_key(key_dir: Path, machine_id_file: Path = MACHINE_ID) -> bytes:
    """The AES-256 key that seals private keys: HKDF(machine id, per-install salt)."""
    try:
        salt = (key_dir / "salt").read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"{key_dir}/salt: {exc.strerror}; run 'cityedge keys init'") from exc
    if len(salt) != SALT_SIZE:
        raise KeyStoreError(f"{key_dir}/salt: must be {SALT_SIZE} bytes")
    hkdf = HKDF(hashes.SHA256(), 32, salt, HKDF_INFO)
    return hkdf.derive(read_machine_id(machine_id_file))


def seal_private(key: SoftwareKey, kek: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    head = _SEAL_HEAD.pack(SEAL_MAGIC, SEAL_VERSION, ALG_CODES[key.algorithm], key.key_id, nonce)
    return head + AESGCM(kek).encrypt(nonce, key.seeds(), head)


def unseal_private(data: bytes, kek: bytes) -> SoftwareKey:
    if len(data) < _SEAL_HEAD.size + 16 or data[:4] != SEAL_MAGIC:
        raise KeyStoreError("not a sealed cityedge key")
    _m, version, code, key_id, nonce = _SEAL_HEAD.unpack_from(data)
    algorithm = ALG_BY_CODE.get(code)
    if version != SEAL_VERSION or algorithm is None:
        raise KeyStoreError(f"sealed key version {version} / algorithm {code} unknown")
    try:
        seeds = AESGCM(kek).decrypt(nonce, data[_SEAL_HEAD.size :], data[: _SEAL_HEAD.size])
    except InvalidTag as exc:
        raise KeyStoreError(
            "cannot unseal the key: another machine, a changed /etc/machine-id or salt,"
            " or a damaged file"
        ) from exc
    key = SoftwareKey.from_seeds(algorithm, seeds)
    if key.key_id != key_id:
        raise KeyStoreError("sealed key does not match its key id")
    return key


# -- storing keys --------------------------------------------------------------


def _store(
    key_dir: Path,
    machine_id_file: Path,
    algorithm: str,
    pkcs11: Pkcs11Config | None,
) -> SigningKey:
    """Create a new key (not yet active) and write its files."""
    if pkcs11 is not None:
        if algorithm != ED25519:
            raise KeyStoreError("a PKCS#11 token holds Ed25519 keys only (no ML-DSA in tokens)")
        cka_id, public = pkcs11_generate(pkcs11)
        ref = {"token_label": pkcs11.token_label, "cka_id": cka_id.hex()}
        _write(key_dir / "keys" / f"{public.key_id.hex()}.pkcs11", json.dumps(ref).encode(), 0o644)
        key: SigningKey = Pkcs11Key(pkcs11, cka_id)
    else:
        soft = SoftwareKey.generate(algorithm)
        kek = sealing_key(key_dir, machine_id_file)
        _write(key_dir / "keys" / f"{soft.key_id.hex()}.sealed", seal_private(soft, kek), 0o600)
        key = soft
    _write(
        key_dir / "keys" / f"{key.key_id.hex()}.pub", (key.public.to_text() + "\n").encode(), 0o644
    )
    return key


def _activate(key_dir: Path, key_id: bytes) -> None:
    _write(key_dir / "current", (key_id.hex() + "\n").encode(), 0o644)


def init(
    key_dir: Path,
    algorithm: str = ED25519,
    *,
    machine_id_file: Path = MACHINE_ID,
    pkcs11: Pkcs11Config | None = None,
) -> KeyRecord:
    """Create the key directory and its first key. Refuses an initialised one."""
    check_algorithm(algorithm)
    if (key_dir / "current").exists():
        raise KeyStoreError(f"{key_dir}: already has a key; use 'cityedge keys rotate'")
    _mkdirs(key_dir)
    if not (key_dir / "salt").exists():
        _write(key_dir / "salt", secrets.token_bytes(SALT_SIZE), 0o600)
    key = _store(key_dir, machine_id_file, algorithm, pkcs11)
    _close(key)
    _activate(key_dir, key.key_id)
    return _record(key_dir, key.key_id.hex(), active=True)


def _close(key: SigningKey) -> None:
    close = getattr(key, "close", None)  # a token session
    if close is not None:
        close()


def active_key_id(key_dir: Path) -> str:
    try:
        kid = (key_dir / "current").read_text().strip()
    except OSError as exc:
        raise KeyStoreError(
            f"{key_dir}: no key ({exc.strerror}); run 'cityedge keys init'"
        ) from exc
    if len(kid) != 64 or any(c not in "0123456789abcdef" for c in kid):
        raise KeyStoreError(f"{key_dir}/current: not a key id")
    return kid


def load_active(
    key_dir: Path,
    *,
    machine_id_file: Path = MACHINE_ID,
    pkcs11: Pkcs11Config | None = None,
) -> SigningKey:
    """The active private key: unsealed into memory, or a handle into the token."""
    return _load(key_dir, active_key_id(key_dir), machine_id_file, pkcs11)


def _load(
    key_dir: Path, kid: str, machine_id_file: Path, pkcs11: Pkcs11Config | None
) -> SigningKey:
    sealed = key_dir / "keys" / f"{kid}.sealed"
    ref = key_dir / "keys" / f"{kid}.pkcs11"
    if sealed.exists():
        key: SigningKey = unseal_private(sealed.read_bytes(), sealing_key(key_dir, machine_id_file))
    elif ref.exists():
        if pkcs11 is None:
            raise KeyStoreError(f"key {kid[:16]} is in a PKCS#11 token: give the module and PIN")
        doc = json.loads(ref.read_text())
        key = Pkcs11Key(pkcs11, bytes.fromhex(doc["cka_id"]))
    else:
        raise KeyStoreError(f"{key_dir}: key {kid[:16]} has no private part here")
    if key.key_id.hex() != kid:
        raise KeyStoreError(f"{key_dir}: key {kid[:16]} does not match its files")
    return key


def _record(key_dir: Path, kid: str, *, active: bool) -> KeyRecord:
    pub = key_dir / "keys" / f"{kid}.pub"
    try:
        public = PublicKey.from_text(pub.read_text())
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"{pub}: {exc}") from exc
    backend = "pkcs11" if (key_dir / "keys" / f"{kid}.pkcs11").exists() else "sealed"
    return KeyRecord(public, backend, active, pub.stat().st_mtime)


def public_keys(key_dir: Path) -> list[PublicKey]:
    """Every public key the directory has held, oldest first."""
    kids = sorted((key_dir / "keys").glob("*.pub"), key=lambda p: p.stat().st_mtime_ns)
    return [_record(key_dir, p.stem, active=False).public for p in kids]


def rotations(key_dir: Path) -> list[bytes]:
    """The encoded rotation statements, oldest first (publish them to the hub)."""
    return [p.read_bytes() for p in sorted((key_dir / "rotations").glob("*.rot"))]


def show(key_dir: Path) -> KeyDirInfo:
    active = active_key_id(key_dir)
    records = [
        _record(key_dir, p.stem, active=p.stem == active)
        for p in sorted((key_dir / "keys").glob("*.pub"), key=lambda p: p.stat().st_mtime_ns)
    ]
    stmts = []
    for raw in rotations(key_dir):
        with contextlib.suppress(EnvelopeError):
            stmts.append(open_rotation(raw))
    current = next(r for r in records if r.active)
    return KeyDirInfo(current, records, stmts)


def rotate(
    key_dir: Path,
    algorithm: str | None = None,
    *,
    machine_id_file: Path = MACHINE_ID,
    pkcs11: Pkcs11Config | None = None,
) -> RotationStatement:
    """Make a new active key; the old key signs it, the new key countersigns.

    The old key's files stay (its public key is still needed to verify the
    batches it signed, some of them maybe still in the outbox). The signer
    picks the new key up by itself (it watches ``current``).
    """
    old = load_active(key_dir, machine_id_file=machine_id_file, pkcs11=pkcs11)
    try:
        new = _store(key_dir, machine_id_file, check_algorithm(algorithm or old.algorithm), pkcs11)
        try:
            created = int(time.time())
            signed = rotation_signed_part(old.algorithm, old.key_id, new.public, created)
            digest = digest_of(signed)
            stmt = RotationStatement(
                old.algorithm,
                old.key_id,
                new.public,
                created,
                old.sign_digest(digest),
                new.sign_digest(digest),
            )
        finally:
            _close(new)
    finally:
        _close(old)
    n = len(list((key_dir / "rotations").glob("*.rot"))) + 1
    name = f"{n:04d}-{new.key_id.hex()[:16]}.rot"
    _write(key_dir / "rotations" / name, stmt.encode(), 0o644)
    _activate(key_dir, new.key_id)
    return stmt


# -- TLS client certificate request ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CsrResult:
    key_path: Path
    csr_pem: bytes
    new_key: bool


def csr(
    tls_dir: Path,
    subject: str,
    *,
    signing_key_id: bytes | None = None,
    dns_names: Sequence[str] = (),
    new_key: bool = False,
) -> CsrResult:
    """A CSR for the gateway's TLS client certificate, with its own P-256 key.

    The TLS key is *not* the signing key: the MQTT client (OpenSSL inside the
    agent process) must hold its TLS key, while the signing key must never be
    in the agent. ECDSA P-256 because every broker accepts it as a client
    certificate. ``signing_key_id`` is added as a SAN URI
    ``urn:cityedge:signing-key:<hex>`` so the city's CA records which signing
    key belongs to which TLS identity. The key is kept across renewals unless
    ``new_key``.
    """
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = tls_dir / "client.key"
    made = new_key or not key_path.exists()
    if made:
        tls_key = ec.generate_private_key(ec.SECP256R1())
        pem = tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(key_path, pem, 0o600)
    else:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"{key_path}: not an EC key")
        tls_key = loaded
    name = (
        x509.Name.from_rfc4514_string(subject)
        if "=" in subject
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    if signing_key_id is not None:
        sans.append(
            x509.UniformResourceIdentifier(f"urn:cityedge:signing-key:{signing_key_id.hex()}")
        )
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(tls_key, hashes.SHA256())
    out = request.public_bytes(serialization.Encoding.PEM)
    _write(tls_dir / "client.csr", out, 0o644)
    return CsrResult(key_path, out, made)
