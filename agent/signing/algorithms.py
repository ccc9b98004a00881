"""Signature algorithms: Ed25519, and hybrid Ed25519 + ML-DSA-65 (FIPS 204).

Everything here signs and verifies 64-byte *digests* (SHA-512 of whatever the
caller protects), never the data itself, so a signer never sees a batch body.
A hybrid signature is valid only when both halves are: an attacker must break
Ed25519 *and* ML-DSA-65.

A key id is SHA-256 of the raw public key (for hybrid: the 32 Ed25519 bytes
followed by the 1952 ML-DSA-65 bytes). Its hex form names key files and
appears in every envelope header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

ED25519 = "ed25519"
HYBRID = "ed25519+mldsa65"
ALGORITHMS = (ED25519, HYBRID)
ALG_CODES = {ED25519: 1, HYBRID: 2}  # one byte in envelopes and statements
ALG_BY_CODE = {code: name for name, code in ALG_CODES.items()}

DIGEST_SIZE = 64
ED25519_PUBLIC = 32
ED25519_SIG = 64
MLDSA65_PUBLIC = 1952
MLDSA65_SIG = 3309
SEED_SIZE = 32
# FIPS 204 context string: binds ML-DSA signatures to this application.
MLDSA_CONTEXT = b"cityedge"


class UnknownAlgorithm(ValueError):
    """An algorithm name or code this version does not know."""


def check_algorithm(name: str) -> str:
    if name not in ALG_CODES:
        raise UnknownAlgorithm(f"algorithm must be one of {', '.join(ALGORITHMS)} (got {name!r})")
    return name


def signature_sizes(algorithm: str) -> tuple[int, ...]:
    """The fixed signature sizes, in envelope order."""
    return (ED25519_SIG,) if check_algorithm(algorithm) == ED25519 else (ED25519_SIG, MLDSA65_SIG)


def public_size(algorithm: str) -> int:
    return (
        ED25519_PUBLIC if check_algorithm(algorithm) == ED25519 else ED25519_PUBLIC + MLDSA65_PUBLIC
    )


def seed_size(algorithm: str) -> int:
    return SEED_SIZE if check_algorithm(algorithm) == ED25519 else 2 * SEED_SIZE


@dataclass(frozen=True)
class PublicKey:
    """A public key (or hybrid pair) with its id; validated on construction."""

    algorithm: str
    raw: bytes
    _ed: ed25519.Ed25519PublicKey = field(init=False, repr=False, compare=False)
    _ml: mldsa.MLDSA65PublicKey | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        if len(self.raw) != public_size(self.algorithm):
            raise ValueError(
                f"{self.algorithm} public key must be {public_size(self.algorithm)} bytes"
                f" (got {len(self.raw)})"
            )
        try:
            ed = ed25519.Ed25519PublicKey.from_public_bytes(self.raw[:ED25519_PUBLIC])
            ml = (
                mldsa.MLDSA65PublicKey.from_public_bytes(self.raw[ED25519_PUBLIC:])
                if self.algorithm == HYBRID
                else None
            )
        except ValueError as exc:
            raise ValueError(f"not a valid {self.algorithm} public key: {exc}") from exc
        object.__setattr__(self, "_ed", ed)
        object.__setattr__(self, "_ml", ml)

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @property
    def fingerprint(self) -> str:
        """First 16 bytes of the key id, colon-separated: for reading aloud."""
        return ":".join(f"{b:02x}" for b in self.key_id[:16])

    def to_text(self) -> str:
        """One line: ``<algorithm> <base64 raw>`` (like an OpenSSH public key)."""
        return f"{self.algorithm} {base64.b64encode(self.raw).decode()}"

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        parts = text.split()
        if len(parts) != 2:
            raise ValueError("a public key line is '<algorithm> <base64>'")
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"public key is not base64: {exc}") from exc
        return cls(check_algorithm(parts[0]), raw)

    def verify(self, digest: bytes, signatures: Sequence[bytes]) -> bool:
        """True when every signature of the algorithm is valid over ``digest``."""
        if len(signatures) != len(signature_sizes(self.algorithm)):
            return False
        try:
            self._ed.verify(signatures[0], digest)
            if self._ml is not None:
                self._ml.verify(signatures[1], digest, MLDSA_CONTEXT)
        except InvalidSignature:
            return False
        return True


class SoftwareKey:
    """A private key held in this process's memory.

    Used by the signer daemon (unsealed from the key directory) and by tests
    and benchmarks. The agent process never constructs one in production.
    """

    def __init__(
        self,
        algorithm: str,
        ed: ed25519.Ed25519PrivateKey,
        ml: mldsa.MLDSA65PrivateKey | None = None,
    ) -> None:
        check_algorithm(algorithm)
        if (ml is None) != (algorithm == ED25519):
            raise ValueError(f"{algorithm} needs {'an' if ml is None else 'no'} ML-DSA key")
        self.algorithm = algorithm
        self._ed = ed
        self._ml = ml
        raw = ed.public_key().public_bytes_raw()
        if ml is not None:
            raw += ml.public_key().public_bytes_raw()
        self.public = PublicKey(algorithm, raw)

    @classmethod
    def generate(cls, algorithm: str = ED25519) -> SoftwareKey:
        ml = mldsa.MLDSA65PrivateKey.generate() if check_algorithm(algorithm) == HYBRID else None
        return cls(algorithm, ed25519.Ed25519PrivateKey.generate(), ml)

    @classmethod
    def from_seeds(cls, algorithm: str, seeds: bytes) -> SoftwareKey:
        if len(seeds) != seed_size(algorithm):
            raise ValueError(f"{algorithm} seed material must be {seed_size(algorithm)} bytes")
        ed = ed25519.Ed25519PrivateKey.from_private_bytes(seeds[:SEED_SIZE])
        ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(seeds[SEED_SIZE:]) if len(seeds) > 32 else None
        return cls(algorithm, ed, ml)

    def seeds(self) -> bytes:
        """The secret seed material (only for sealing it at rest)."""
        out = self._ed.private_bytes_raw()
        if self._ml is not None:
            out += self._ml.private_bytes_raw()
        return out

    @property
    def key_id(self) -> bytes:
        return self.public.key_id

    def sign_digest(self, digest: bytes) -> tuple[bytes, ...]:
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a digest is {DIGEST_SIZE} bytes (got {len(digest)})")
        sigs = [self._ed.sign(digest)]
        if self._ml is not None:
            sigs.append(self._ml.sign(digest, MLDSA_CONTEXT))
        return tuple(sigs)
