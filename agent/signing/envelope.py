"""Batch payload v2 (a signed, chained envelope) and key rotation statements. Pure.

Byte layouts are in docs/security.md; all integers are big-endian.

A v2 batch is ``header || body || signatures``. The *signed part* is
``header || body``; its SHA-512 is the digest the signer signs, its SHA-256
is the link the next batch names as ``prev``. The body is the unchanged v1
payload (zlib JSON, docs/uplink.md), so a hub strips the envelope and decodes
the body as before.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cityedge.signing.algorithms import (
    ALG_BY_CODE,
    ALG_CODES,
    DIGEST_SIZE,
    PublicKey,
    public_size,
    signature_sizes,
)

MAGIC = b"CEB2"
VERSION = 2
ROTATION_MAGIC = b"CERS"
ROTATION_VERSION = 1
MAX_GATEWAY_ID = 64
MAX_BODY = 16 * 1024 * 1024
HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
_TAIL = struct.Struct(">QQ32s32sI")  # epoch, seq, prev, key id, body length
_ROT = struct.Struct(">4sBBBQ32s")  # magic, version, old alg, new alg, created, old key id
U64_MAX = (1 << 64) - 1


class EnvelopeError(ValueError):
    """Bytes that are not a well-formed envelope or statement (never anything else)."""


@dataclass(frozen=True, slots=True)
class Header:
    """The signed header of one batch."""

    gateway_id: str
    epoch: int
    seq: int
    prev: bytes
    algorithm: str
    key_id: bytes

    def encode(self, body_len: int) -> bytes:
        gw = self.gateway_id.encode()
        if not 1 <= len(gw) <= MAX_GATEWAY_ID:
            raise ValueError(f"gateway id must be 1..{MAX_GATEWAY_ID} bytes of UTF-8")
        if not (0 <= self.epoch <= U64_MAX and 1 <= self.seq <= U64_MAX):
            raise ValueError("epoch must be a u64 and seq a u64 from 1")
        if len(self.prev) != HASH_SIZE or len(self.key_id) != HASH_SIZE:
            raise ValueError("prev and key id are 32 bytes")
        if not 0 <= body_len <= MAX_BODY:
            raise ValueError(f"body must be at most {MAX_BODY} bytes")
        head = MAGIC + bytes((VERSION, ALG_CODES[self.algorithm], len(gw))) + gw
        return head + _TAIL.pack(self.epoch, self.seq, self.prev, self.key_id, body_len)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed v2 batch; signatures are not checked by parsing."""

    header: Header
    body: bytes
    signatures: tuple[bytes, ...]
    signed_part: bytes

    @property
    def digest(self) -> bytes:
        return digest_of(self.signed_part)

    @property
    def link_hash(self) -> bytes:
        return link_hash_of(self.signed_part)


def signed_part(header: Header, body: bytes) -> bytes:
    return header.encode(len(body)) + body


def digest_of(signed: bytes) -> bytes:
    """What the signer signs: SHA-512 of the signed part (64 bytes)."""
    return hashlib.sha512(signed).digest()


def link_hash_of(signed: bytes) -> bytes:
    """What the next batch names as ``prev``: SHA-256 of the signed part."""
    return hashlib.sha256(signed).digest()


def seal(header: Header, body: bytes, signatures: Sequence[bytes]) -> bytes:
    """Assemble a v2 batch from its header, body and signatures over its digest."""
    _check_signatures(header.algorithm, signatures)
    return signed_part(header, body) + b"".join(signatures)


def _check_signatures(algorithm: str, signatures: Sequence[bytes]) -> None:
    sizes = signature_sizes(algorithm)
    if tuple(len(s) for s in signatures) != sizes:
        raise ValueError(f"{algorithm} needs signatures of {sizes} bytes")


def is_envelope(data: bytes) -> bool:
    return data[:4] == MAGIC


def open_envelope(data: bytes) -> Envelope:
    """Parse a v2 batch. Raises only :class:`EnvelopeError`."""
    if len(data) < 7 or data[:4] != MAGIC:
        raise EnvelopeError("not a cityedge v2 batch (magic)")
    if data[4] != VERSION:
        raise EnvelopeError(f"unknown envelope version {data[4]}")
    algorithm = ALG_BY_CODE.get(data[5])
    if algorithm is None:
        raise EnvelopeError(f"unknown algorithm code {data[5]}")
    glen = data[6]
    if not 1 <= glen <= MAX_GATEWAY_ID:
        raise EnvelopeError("gateway id length out of range")
    end = 7 + glen + _TAIL.size
    if len(data) < end:
        raise EnvelopeError("truncated header")
    try:
        gateway_id = data[7 : 7 + glen].decode()
    except UnicodeDecodeError as exc:
        raise EnvelopeError("gateway id is not UTF-8") from exc
    epoch, seq, prev, key_id, blen = _TAIL.unpack_from(data, 7 + glen)
    if seq == 0:
        raise EnvelopeError("batch seq 0")
    if blen > MAX_BODY:
        raise EnvelopeError("body length over the limit")
    sizes = signature_sizes(algorithm)
    if len(data) != end + blen + sum(sizes):
        raise EnvelopeError(f"length {len(data)} does not match the header and {algorithm}")
    body_end = end + blen
    sigs, at = [], body_end
    for size in sizes:
        sigs.append(data[at : at + size])
        at += size
    header = Header(gateway_id, epoch, seq, prev, algorithm, key_id)
    return Envelope(header, data[end:body_end], tuple(sigs), data[:body_end])


# -- rotation statements -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationStatement:
    """The old key vouches for the new one; the new key proves possession.

    Both sign SHA-512 of the statement's signed part.
    """

    old_algorithm: str
    old_key_id: bytes
    new_key: PublicKey
    created: int
    old_signatures: tuple[bytes, ...]
    new_signatures: tuple[bytes, ...]

    @property
    def signed_part(self) -> bytes:
        return rotation_signed_part(self.old_algorithm, self.old_key_id, self.new_key, self.created)

    def encode(self) -> bytes:
        _check_signatures(self.old_algorithm, self.old_signatures)
        _check_signatures(self.new_key.algorithm, self.new_signatures)
        return self.signed_part + b"".join(self.old_signatures + self.new_signatures)

    def verify(self, old_key: PublicKey) -> bool:
        """True when ``old_key`` signed it and the new key countersigned it."""
        if old_key.key_id != self.old_key_id or old_key.algorithm != self.old_algorithm:
            return False
        digest = digest_of(self.signed_part)
        return old_key.verify(digest, self.old_signatures) and self.new_key.verify(
            digest, self.new_signatures
        )


def rotation_signed_part(
    old_algorithm: str, old_key_id: bytes, new_key: PublicKey, created: int
) -> bytes:
    if len(old_key_id) != HASH_SIZE or not 0 <= created <= U64_MAX:
        raise ValueError("old key id is 32 bytes, created a u64")
    head = _ROT.pack(
        ROTATION_MAGIC,
        ROTATION_VERSION,
        ALG_CODES[old_algorithm],
        ALG_CODES[new_key.algorithm],
        created,
        old_key_id,
    )
    return head + new_key.raw


def is_rotation(data: bytes) -> bool:
    return data[:4] == ROTATION_MAGIC


def open_rotation(data: bytes) -> RotationStatement:
    """Parse a rotation statement. Raises only :class:`EnvelopeError`."""
    if len(data) < _ROT.size or data[:4] != ROTATION_MAGIC:
        raise EnvelopeError("not a rotation statement (magic)")
    _magic, version, old_code, new_code, created, old_key_id = _ROT.unpack_from(data)
    if version != ROTATION_VERSION:
        raise EnvelopeError(f"unknown rotation statement version {version}")
    old_alg, new_alg = ALG_BY_CODE.get(old_code), ALG_BY_CODE.get(new_code)
    if old_alg is None or new_alg is None:
        raise EnvelopeError("unknown algorithm code in rotation statement")
    at = _ROT.size + public_size(new_alg)
    old_sizes, new_sizes = signature_sizes(old_alg), signature_sizes(new_alg)
    if len(data) != at + sum(old_sizes) + sum(new_sizes):
        raise EnvelopeError("rotation statement length does not match its algorithms")
    try:
        new_key = PublicKey(new_alg, data[_ROT.size : at])
    except ValueError as exc:
        raise EnvelopeError(str(exc)) from exc
    sigs = []
    for size in old_sizes + new_sizes:
        sigs.append(data[at : at + size])
        at += size
    n_old = len(old_sizes)
    return RotationStatement(
        old_alg, old_key_id, new_key, created, tuple(sigs[:n_old]), tuple(sigs[n_old:])
    )


__all__ = [
    "DIGEST_SIZE",
    "MAGIC",
    "ZERO_HASH",
    "Envelope",
    "EnvelopeError",
    "Header",
    "RotationStatement",
    "digest_of",
    "is_envelope",
    "is_rotation",
    "link_hash_of",
    "open_envelope",
    "open_rotation",
    "rotation_signed_part",
    "seal",
    "signed_part",
]
