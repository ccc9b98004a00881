"""The signed measurement record: what runs on this gateway, like a TPM quote.

Published retained on ``<prefix>/<site>/<gateway>/attestation`` at start, on
every (re)connect and after every reload. The hub compares it with the values
it expects: the hashes of the installed agent code, the config file, every
profile and model in use, the gateway's public keys, the boot id and the
time quality. The record is canonical JSON (sorted keys, no spaces); the
signer signs SHA-512 of those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import cityedge
from cityedge import __version__
from cityedge.config.model import Config
from cityedge.readings import format_ts, utc_now
from cityedge.signing.algorithms import PublicKey
from cityedge.signing.chain import DigestSigner


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def code_hash(root: Path | None = None) -> str:
    """One hash over every .py file of the installed package (path and content)."""
    root = root or Path(cityedge.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        h.update(f"{rel}\0{_sha256(path)}\n".encode())
    return h.hexdigest()


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def build_record(
    config: Config,
    *,
    public_keys: list[str],
    models: dict[str, str] | None = None,
    time_ok: bool = True,
    code: str | None = None,
) -> dict[str, Any]:
    """The measurement record (unsigned)."""
    profiles = {d.profile_name: d.profile.sha256 for d in config.devices}
    return {
        "v": 1,
        "gateway": config.site.gateway_id,
        "site": config.site.id,
        "ts": format_ts(utc_now()),
        "version": __version__,
        "boot_id": boot_id(),
        "code_sha256": code or code_hash(),
        "config_sha256": _sha256(config.source) if config.source.exists() else "",
        "profiles": dict(sorted(profiles.items())),
        "models": dict(sorted((models or {}).items())),
        "public_keys": public_keys,
        "time_ok": time_ok,
    }


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def sign_record(record: dict[str, Any], signer: DigestSigner) -> dict[str, Any]:
    info = signer.key_info()
    digest = hashlib.sha512(canonical(record)).digest()
    sigs = signer.sign(digest, info.key_id)
    return {
        "record": record,
        "algorithm": info.algorithm,
        "key_id": info.key_id.hex(),
        "signatures": [base64.b64encode(s).decode() for s in sigs],
    }


def verify_record(doc: dict[str, Any], key: PublicKey) -> bool:
    """The hub's check: the record was signed by ``key``."""
    try:
        sigs = tuple(base64.b64decode(s, validate=True) for s in doc["signatures"])
        if doc["key_id"] != key.key_id.hex() or doc["algorithm"] != key.algorithm:
            return False
        digest = hashlib.sha512(canonical(doc["record"])).digest()
    except (KeyError, TypeError, ValueError):
        return False
    return key.verify(digest, sigs)
