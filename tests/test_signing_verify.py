"""The hub's verifier: a clean capture, and each kind of damage reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityedge.outbox import Drop, Row
from cityedge.signing.algorithms import ED25519, HYBRID, SoftwareKey
from cityedge.signing.chain import BatchSealer, ChainState
from cityedge.signing.envelope import RotationStatement, digest_of, rotation_signed_part
from cityedge.signing.signer_client import LocalSigner
from cityedge.signing.verify import (
    CaptureError,
    Finding,
    Message,
    Verifier,
    read_capture,
    write_capture,
)
from cityedge.uplink.codec import encode_batch

GW = "gw-0001"
TOPIC = f"cityedge/site-a/{GW}/telemetry"


def body(seq: int, drops: tuple[Drop, ...] = ()) -> bytes:
    rows = [Row(seq * 10 + i, 2, b'{"device":"m1","point":"v","value":%d}' % i) for i in range(3)]
    return encode_batch(f"{GW}-ab-{seq}", seq, 2, rows, drops, gateway_id=GW, site_id="site-a")


def capture(
    key: SoftwareKey, n: int, state: ChainState | None = None, first: int = 1
) -> tuple[list[Message], ChainState]:
    sealer = BatchSealer(LocalSigner(key), GW)
    state = state or ChainState.fresh()
    out = []
    for seq in range(first, first + n):
        data, state = sealer.seal(body(seq), state)
        out.append(Message(TOPIC, data))
    return out, state


def run(v: Verifier, msgs: list[Message]) -> list[Finding]:
    found = [f for m in msgs for f in v.feed(m.topic, m.payload)]
    return found + v.finish()


@pytest.fixture(scope="module")
def key() -> SoftwareKey:
    return SoftwareKey.generate(ED25519)


@pytest.fixture(scope="module")
def clean(key: SoftwareKey) -> list[Message]:
    return capture(key, 20)[0]


def kinds(found: list[Finding]) -> list[str]:
    return sorted(f.kind for f in found)


def test_clean_capture_has_no_finding(key: SoftwareKey, clean: list[Message]) -> None:
    """Twenty good batches: twenty verified, nothing reported."""
    v = Verifier({GW: [key.public.to_text()]})
    assert run(v, clean) == []
    r = v.report()[GW]
    assert (r.verified, r.gap, r.duplicate, r.reordered, r.tampered, r.unknown_key) == (
        20,
        0,
        0,
        0,
        0,
        0,
    )


def test_hybrid_capture_verifies() -> None:
    """Hybrid-signed batches verify like Ed25519 ones."""
    hy = SoftwareKey.generate(HYBRID)
    v = Verifier({GW: [hy.public]})
    assert run(v, capture(hy, 5)[0]) == []
    assert v.report()[GW].verified == 5


@pytest.mark.parametrize("where", [20, 200, -1])
def test_flipped_byte_is_tampered(key: SoftwareKey, clean: list[Message], where: int) -> None:
    """One flipped byte (header, body or signature) is reported tampered, its seq a gap."""
    msgs = list(clean)
    data = bytearray(msgs[7].payload)
    data[where] ^= 0x01
    msgs[7] = Message(TOPIC, bytes(data))
    v = Verifier({GW: [key.public]})
    found = run(v, msgs)
    assert kinds(found) == ["gap", "tampered"]
    assert v.report()[GW].tampered == 1
    assert v.report()[GW].verified == 19


def test_dropped_batch_is_a_gap(key: SoftwareKey, clean: list[Message]) -> None:
    """One batch missing from the middle is reported as a gap at its seq."""
    v = Verifier({GW: [key.public]})
    found = run(v, clean[:9] + clean[10:])
    assert [(f.kind, f.seq) for f in found] == [("gap", 10)]
    assert v.report()[GW].gap == 1


def test_replayed_batch_is_a_duplicate(key: SoftwareKey, clean: list[Message]) -> None:
    """A batch sent again (at-least-once, or a replay) is a duplicate, not tampering."""
    v = Verifier({GW: [key.public]})
    found = run(v, [*clean, clean[3]])
    assert [(f.kind, f.seq) for f in found] == [("duplicate", 4)]
    assert v.report()[GW].verified == 20


def test_swapped_batches_are_reordered(key: SoftwareKey, clean: list[Message]) -> None:
    """Two batches swapped: one reordered finding, no gap, all verified."""
    msgs = list(clean)
    msgs[5], msgs[6] = msgs[6], msgs[5]
    v = Verifier({GW: [key.public]})
    found = run(v, msgs)
    assert [(f.kind, f.seq) for f in found] == [("reordered", 6)]
    assert v.report()[GW].verified == 20


def test_gap_reported_once_it_falls_behind_the_reorder_window(
    key: SoftwareKey, clean: list[Message]
) -> None:
    """A live verifier reports a hole as soon as it is reorder_window batches old."""
    v = Verifier({GW: [key.public]}, reorder_window=4)
    found = [f for m in clean[:2] + clean[3:] for f in v.feed(m.topic, m.payload)]
    assert [(f.kind, f.seq) for f in found] == [("gap", 3)]
    assert v.finish() == []


def test_late_batch_after_its_gap_was_reported(key: SoftwareKey, clean: list[Message]) -> None:
    """A batch that arrives after being reported missing counts as reordered, gap undone."""
    v = Verifier({GW: [key.public]}, reorder_window=2)
    msgs = clean[:2] + clean[3:10] + [clean[2]]
    found = run(v, msgs)
    assert kinds(found) == ["gap", "reordered"]
    assert (v.report()[GW].gap, v.report()[GW].reordered) == (0, 1)


def test_same_seq_different_bytes_is_tampered(key: SoftwareKey) -> None:
    """Two validly signed batches with one seq (a forked chain) are tampering."""
    first, state = capture(key, 3)
    fork, _ = capture(key, 1, ChainState(state.epoch, 2, b"\x01" * 32), first=3)
    v = Verifier({GW: [key.public]})
    found = run(v, [*first, *fork])
    assert "tampered" in kinds(found)


def test_unknown_key_and_gateway(key: SoftwareKey, clean: list[Message]) -> None:
    """Batches signed by an untrusted key, or from an unknown gateway, are unknown_key."""
    other = SoftwareKey.generate()
    v = Verifier({GW: [other.public]})
    assert kinds(run(v, clean[:2])) == ["unknown_key", "unknown_key"]
    v = Verifier({"gw-other": [key.public]})
    assert [f.detail for f in run(v, clean[:1])] == ["unknown gateway"]


def test_malformed_and_topic_mismatch(key: SoftwareKey, clean: list[Message]) -> None:
    """Garbage is malformed; a batch under another gateway's topic is flagged."""
    v = Verifier({GW: [key.public]})
    assert kinds(v.feed(TOPIC, b"\x78\x9cgarbage")) == ["malformed"]
    found = v.feed("cityedge/site-a/gw-9999/telemetry", clean[0].payload)
    assert kinds(found) == ["topic_mismatch"]


def test_declared_drop_is_reported(key: SoftwareKey) -> None:
    """A drop declared in a signed body is reported and counted, not taken as a gap."""
    state = ChainState.fresh()
    data, _ = BatchSealer(LocalSigner(key), GW).seal(body(1, (Drop(2, 5, 9, 5),)), state)
    v = Verifier({GW: [key.public]})
    found = run(v, [Message(TOPIC, data)])
    assert [f.kind for f in found] == ["declared_drop"]
    assert v.report()[GW].declared_drops == 5
    assert v.report()[GW].gap == 0


def test_new_epoch_is_reported(key: SoftwareKey, clean: list[Message]) -> None:
    """A chain restarted with a new epoch (state lost) is declared, and both verify."""
    v = Verifier({GW: [key.public]})
    found = run(v, clean[:3] + capture(key, 2)[0])
    assert kinds(found) == ["new_epoch"]
    assert v.report()[GW].verified == 5


def rotation(old: SoftwareKey, new: SoftwareKey) -> bytes:
    digest = digest_of(rotation_signed_part(old.algorithm, old.key_id, new.public, 1))
    return RotationStatement(
        old.algorithm, old.key_id, new.public, 1, old.sign_digest(digest), new.sign_digest(digest)
    ).encode()


def test_rotation_keeps_the_chain_verifiable(key: SoftwareKey) -> None:
    """Old key, rotation statement, new key (hybrid): one unbroken verified chain."""
    new = SoftwareKey.generate(HYBRID)
    before, state = capture(key, 5)
    after, _ = capture(new, 5, state, first=6)
    stmt = Message(f"cityedge/site-a/{GW}/keys", rotation(key, new))
    v = Verifier({GW: [key.public]})
    assert run(v, [*before, stmt, *after]) == []
    assert (v.report()[GW].verified, v.report()[GW].rotations) == (10, 1)
    v = Verifier({GW: [key.public]}, rotations=[stmt.payload])  # given up front
    assert run(v, after) == []
    v = Verifier({GW: [key.public]})  # without the statement the new key is unknown
    assert kinds(run(v, after)) == ["unknown_key"] * 5


def test_rotation_not_signed_by_a_trusted_key_is_refused(key: SoftwareKey) -> None:
    """A statement from an untrusted key does not make its new key trusted."""
    stranger, new = SoftwareKey.generate(), SoftwareKey.generate()
    v = Verifier({GW: [key.public]}, rotations=[rotation(stranger, new)])
    assert kinds(run(v, capture(new, 1)[0])) == ["unknown_key"]
    forged = bytearray(rotation(key, new))
    forged[-1] ^= 1
    assert kinds(v.feed("t", bytes(forged))) == ["bad_rotation"]


def test_capture_file_round_trip(tmp_path: Path, key: SoftwareKey, clean: list[Message]) -> None:
    """write_capture then read_capture gives the same messages; bad lines name file:line."""
    path = tmp_path / "cap.jsonl"
    assert write_capture(path, clean) == 20
    assert list(read_capture(path)) == clean
    path.write_text('{"topic":"t","payload":"AAAA"}\n{"topic":"t"}\n')
    with pytest.raises(CaptureError, match=r"cap\.jsonl:2"):
        list(read_capture(path))


def test_the_gateways_keys_message_is_read_not_called_malformed() -> None:
    """The retained keys topic carries JSON; a broken one is malformed, an empty one is fine."""
    v = Verifier({"gw-1": []})
    topic = "cityedge/site/gw-1/keys"
    assert v.feed(topic, b'{"active": "00", "keys": [], "rotations": []}') == []
    (bad,) = v.feed(topic, b'{"rotations": ["not base64!"]}')
    assert bad.kind == "malformed" and "keys message" in bad.detail
