"""The hash chain: step function, stored state, sealing across batches and restarts."""

from __future__ import annotations

import pytest

from cityedge.outbox import Drop, Row
from cityedge.signing.algorithms import ED25519, HYBRID, SoftwareKey
from cityedge.signing.chain import BatchSealer, ChainState, LinkFields, next_link
from cityedge.signing.envelope import ZERO_HASH, link_hash_of, open_envelope, signed_part
from cityedge.signing.protocol import KeyChanged, KeyInfo
from cityedge.signing.signer_client import LocalSigner
from cityedge.uplink.codec import decode_batch, encode_batch


def body(seq: int, drops: tuple[Drop, ...] = ()) -> bytes:
    rows = [Row(seq * 10 + i, 2, b'{"device":"m1","point":"v","value":%d}' % i) for i in range(3)]
    return encode_batch(f"gw-1-ab-{seq}", seq, 2, rows, drops, gateway_id="gw-1", site_id="s")


def test_next_link_is_pure_and_chains() -> None:
    """next_link numbers from 1 and names the previous signed part's hash as prev."""
    fields = LinkFields("gw-1", ED25519, bytes(32))
    state = ChainState.fresh(epoch=5)
    h1, s1 = next_link(state, fields, b"one")
    assert next_link(state, fields, b"one") == (h1, s1)
    assert (h1.seq, h1.prev, h1.epoch) == (1, ZERO_HASH, 5)
    h2, s2 = next_link(s1, fields, b"two")
    assert (h2.seq, h2.prev) == (2, link_hash_of(signed_part(h1, b"one")))
    assert s2 == ChainState(5, 2, link_hash_of(signed_part(h2, b"two")))


def test_state_json_round_trip() -> None:
    """The chain state survives its meta-table form; junk is refused with ValueError."""
    state = ChainState(2**64 - 1, 123, bytes(range(32)))
    assert ChainState.from_json(state.to_json()) == state
    for junk in ("", "{}", '{"v":2}', '{"v":1,"epoch":1,"seq":1,"last":"zz"}', "[1]"):
        with pytest.raises(ValueError):
            ChainState.from_json(junk)
    assert ChainState.fresh().epoch != ChainState.fresh().epoch


@pytest.mark.parametrize("algorithm", [ED25519, HYBRID])
def test_sealer_chains_batches_across_a_restart(algorithm: str) -> None:
    """Batches sealed before and after a restart (state reloaded from JSON) form one chain."""
    key = SoftwareKey.generate(algorithm)
    sealer = BatchSealer(LocalSigner(key), "gw-1")
    state = ChainState.fresh()
    envs = []
    for seq in range(1, 4):
        data, state = sealer.seal(body(seq), state)
        envs.append(open_envelope(data))
    stored = state.to_json()
    sealer = BatchSealer(LocalSigner(key), "gw-1")  # a new process
    data, state = sealer.seal(body(4), ChainState.from_json(stored))
    envs.append(open_envelope(data))
    for i, env in enumerate(envs):
        assert env.header.seq == i + 1
        assert env.header.prev == (envs[i - 1].link_hash if i else ZERO_HASH)
        assert key.public.verify(env.digest, env.signatures)
        assert decode_batch(env.body)["seq"] == i + 1
    assert state.last_hash == envs[-1].link_hash


def test_declared_drop_is_inside_the_signed_body() -> None:
    """A drop declared by the outbox is part of the signed bytes."""
    key = SoftwareKey.generate()
    data, _ = BatchSealer(LocalSigner(key), "gw-1").seal(
        body(1, (Drop(2, 100, 199, 100),)), ChainState.fresh()
    )
    env = open_envelope(data)
    assert decode_batch(env.body)["dropped"][0]["count"] == 100
    assert key.public.verify(env.digest, env.signatures)


class RotatingSigner:
    """A signer whose key changes between key_info and sign, once."""

    def __init__(self) -> None:
        self.old, self.new = SoftwareKey.generate(), SoftwareKey.generate()
        self.calls = 0

    def key_info(self) -> KeyInfo:
        key = self.old if self.calls == 0 else self.new
        self.calls += 1
        return KeyInfo(key.key_id, key.algorithm, key.public, "local")

    def sign(self, digest: bytes, key_id: bytes) -> tuple[bytes, ...]:
        if key_id != self.new.key_id:
            raise KeyChanged()
        return self.new.sign_digest(digest)


def test_sealer_rebuilds_the_header_after_a_rotation() -> None:
    """When the signer's key changed, the sealer asks again and names the new key."""
    signer = RotatingSigner()
    data, state = BatchSealer(signer, "gw-1").seal(body(1), ChainState.fresh())
    env = open_envelope(data)
    assert env.header.key_id == signer.new.key_id
    assert signer.new.public.verify(env.digest, env.signatures)
    assert state.seq == 1
