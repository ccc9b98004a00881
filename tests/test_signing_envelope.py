"""Batch payload v2: layout, round trips, rotation statements, fuzzing of the parsers."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityedge.signing.algorithms import ED25519, HYBRID, PublicKey, SoftwareKey
from cityedge.signing.envelope import (
    MAGIC,
    ZERO_HASH,
    EnvelopeError,
    Header,
    RotationStatement,
    digest_of,
    open_envelope,
    open_rotation,
    rotation_signed_part,
    seal,
    signed_part,
)

ED_KEY = SoftwareKey.generate(ED25519)
HY_KEY = SoftwareKey.generate(HYBRID)


def _sealed(key: SoftwareKey, body: bytes = b"body", seq: int = 1) -> bytes:
    header = Header("gw-0001", 7, seq, ZERO_HASH, key.algorithm, key.key_id)
    return seal(header, body, key.sign_digest(digest_of(signed_part(header, body))))


@pytest.mark.parametrize("key", [ED_KEY, HY_KEY], ids=["ed25519", "hybrid"])
def test_round_trip(key: SoftwareKey) -> None:
    """seal then open_envelope gives back header, body and valid signatures."""
    data = _sealed(key, b"\x78\x9c payload", seq=42)
    env = open_envelope(data)
    assert env.header == Header("gw-0001", 7, 42, ZERO_HASH, key.algorithm, key.key_id)
    assert env.body == b"\x78\x9c payload"
    assert key.public.verify(env.digest, env.signatures)
    assert env.link_hash == hashlib.sha256(env.signed_part).digest()


def test_documented_layout() -> None:
    """The bytes sit where docs/security.md says they do."""
    key_id = bytes(range(32))
    prev = bytes(range(100, 132))
    header = Header("gw", 0x0102030405060708, 9, prev, ED25519, key_id)
    data = seal(header, b"BODY", [b"S" * 64])
    assert data[:4] == MAGIC == b"CEB2"
    assert data[4:7] == bytes((2, 1, 2))  # version, algorithm code, gateway id length
    assert data[7:9] == b"gw"
    epoch, seq, prev2, kid, blen = struct.unpack_from(">QQ32s32sI", data, 9)
    assert (epoch, seq, prev2, kid, blen) == (0x0102030405060708, 9, prev, key_id, 4)
    assert data[93:97] == b"BODY"
    assert data[97:] == b"S" * 64
    assert len(data) == 91 + 2 + 4 + 64


def test_hybrid_needs_both_signatures() -> None:
    """A hybrid envelope whose ML-DSA half is wrong does not verify."""
    env = open_envelope(_sealed(HY_KEY))
    bad = (env.signatures[0], bytes(len(env.signatures[1])))
    assert not HY_KEY.public.verify(env.digest, bad)
    assert HY_KEY.public.verify(env.digest, env.signatures)


def test_signature_sizes_checked_on_seal() -> None:
    """seal refuses signatures that do not fit the algorithm."""
    header = Header("gw", 1, 1, ZERO_HASH, HYBRID, HY_KEY.key_id)
    with pytest.raises(ValueError):
        seal(header, b"", [b"x" * 64])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x03" + d[5:], "version"),
        (lambda d: d[:5] + b"\x09" + d[6:], "algorithm"),
        (lambda d: d[:-1], "length"),
        (lambda d: d + b"\x00", "length"),
        (lambda d: d[:50], "truncated"),
    ],
)
def test_rejections_name_the_problem(mutate: object, message: str) -> None:
    """Broken envelopes raise EnvelopeError saying what is wrong."""
    data = _sealed(ED_KEY)
    with pytest.raises(EnvelopeError, match=message):
        open_envelope(mutate(data))  # type: ignore[operator]


def test_header_validation() -> None:
    """Headers with impossible fields are refused when encoding."""
    for bad in (
        Header("", 1, 1, ZERO_HASH, ED25519, ED_KEY.key_id),
        Header("g" * 65, 1, 1, ZERO_HASH, ED25519, ED_KEY.key_id),
        Header("gw", 1, 0, ZERO_HASH, ED25519, ED_KEY.key_id),
        Header("gw", 1, 1, b"short", ED25519, ED_KEY.key_id),
    ):
        with pytest.raises(ValueError):
            bad.encode(0)


def _statement(old: SoftwareKey, new: SoftwareKey) -> RotationStatement:
    digest = digest_of(rotation_signed_part(old.algorithm, old.key_id, new.public, 1_700_000_000))
    return RotationStatement(
        old.algorithm,
        old.key_id,
        new.public,
        1_700_000_000,
        old.sign_digest(digest),
        new.sign_digest(digest),
    )


@pytest.mark.parametrize(("old", "new"), [(ED_KEY, HY_KEY), (HY_KEY, ED_KEY)])
def test_rotation_statement_round_trip(old: SoftwareKey, new: SoftwareKey) -> None:
    """A rotation statement parses back and verifies against the old key only."""
    stmt = open_rotation(_statement(old, new).encode())
    assert stmt.new_key == new.public
    assert stmt.verify(old.public)
    assert not stmt.verify(new.public)


def test_rotation_statement_needs_the_new_keys_countersignature() -> None:
    """A statement naming a key whose holder did not countersign is refused."""
    other = SoftwareKey.generate(ED25519)
    good = _statement(ED_KEY, other)
    forged = RotationStatement(
        good.old_algorithm,
        good.old_key_id,
        good.new_key,
        good.created,
        good.old_signatures,
        (bytes(64),),
    )
    assert not open_rotation(forged.encode()).verify(ED_KEY.public)


def test_public_key_text_round_trip() -> None:
    """Public key lines parse back to the same key and id."""
    for key in (ED_KEY, HY_KEY):
        text = key.public.to_text()
        assert PublicKey.from_text(text) == key.public
        assert text.startswith(key.algorithm + " ")
    with pytest.raises(ValueError):
        PublicKey.from_text("ed25519 !!!")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_open_envelope(data: bytes) -> None:
    """Random bytes either parse or raise EnvelopeError, nothing else."""
    for candidate in (data, MAGIC + b"\x02" + data, MAGIC + b"\x02\x01" + data):
        with contextlib.suppress(EnvelopeError):
            open_envelope(candidate)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.binary(min_size=1, max_size=8))
def test_fuzz_envelope_mutations(at: int, junk: bytes) -> None:
    """A sealed envelope with bytes overwritten parses or raises EnvelopeError only."""
    data = bytearray(_sealed(ED_KEY))
    at %= len(data)
    data[at : at + len(junk)] = junk
    try:
        env = open_envelope(bytes(data))
    except EnvelopeError:
        return
    assert env.header.seq >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_open_rotation(data: bytes) -> None:
    """Random bytes after the rotation magic raise only EnvelopeError."""
    for candidate in (data, b"CERS\x01" + data, b"CERS\x01\x01\x01" + data):
        with contextlib.suppress(EnvelopeError):
            open_rotation(candidate)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.binary(min_size=1, max_size=8))
def test_fuzz_rotation_mutations(at: int, junk: bytes) -> None:
    """A hybrid rotation statement with bytes overwritten raises only EnvelopeError."""
    data = bytearray(_statement(ED_KEY, HY_KEY).encode())
    at %= len(data)
    data[at : at + len(junk)] = junk
    try:
        stmt = open_rotation(bytes(data))
    except EnvelopeError:
        return
    stmt.verify(ED_KEY.public)
