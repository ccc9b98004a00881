"""Signed downlink commands: each rejection with its reason, and the nonce cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cityedge.signing.algorithms import HYBRID, SoftwareKey
from cityedge.signing.downlink import (
    REASONS,
    Command,
    CommandVerifier,
    NonceCache,
    new_command,
    sign_command,
)

GW = "gw-0001"
NOW = 1_750_000_000.0
AUTHORITY = SoftwareKey.generate()


def verifier(**kw: object) -> CommandVerifier:
    return CommandVerifier([AUTHORITY.public.to_text()], GW, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def write(value: float, *, at: float = NOW, target: str = GW) -> Command:
    return new_command(
        "write", {"device": "lamp-3", "point": "dim", "value": value}, target, now=at
    )


def test_accepts_a_good_command() -> None:
    """A fresh command for this gateway, signed by the authority, is accepted."""
    verdict = verifier().check(sign_command(write(40), AUTHORITY))
    assert verdict.ok and verdict.command is not None
    assert verdict.command.args["value"] == 40


def test_hybrid_authority() -> None:
    """A hybrid authority key signs commands that verify."""
    hy = SoftwareKey.generate(HYBRID)
    v = CommandVerifier([hy.public], GW, clock=lambda: NOW)
    assert v.check(sign_command(write(1), hy)).ok


def test_bad_signature() -> None:
    """A flipped byte, or a key that is not the authority's, is bad_signature."""
    data = bytearray(sign_command(write(40), AUTHORITY))
    data[-3] ^= 1
    assert verifier().check(bytes(data)).reason == "bad_signature"
    other = SoftwareKey.generate()
    assert verifier().check(sign_command(write(40), other)).reason == "bad_signature"


def test_body_altered_is_bad_signature() -> None:
    """Changing the value inside a signed command breaks its signature."""
    data = sign_command(write(40), AUTHORITY)
    forged = data.replace(b'"value":40', b'"value":99')
    assert forged != data
    assert verifier().check(forged).reason == "bad_signature"


@pytest.mark.parametrize("age", [301.0, -301.0, 86400.0])
def test_expired(age: float) -> None:
    """Outside ±300 s (old, or from the future) is expired."""
    verdict = verifier().check(sign_command(write(40, at=NOW - age), AUTHORITY))
    assert verdict.reason == "expired"
    assert ("s in the future" if age < 0 else "s old") in verdict.detail


def test_replayed_nonce() -> None:
    """The same signed command twice: the second is replayed_nonce."""
    v = verifier()
    data = sign_command(write(40), AUTHORITY)
    assert v.check(data).ok
    assert v.check(data).reason == "replayed_nonce"
    assert v.counters["replayed_nonce"] == 1 and v.counters["accepted"] == 1


def test_wrong_target() -> None:
    """A command for another gateway is wrong_target."""
    assert verifier().check(sign_command(write(40, target="gw-0002"), AUTHORITY)).reason == (
        "wrong_target"
    )


def test_policy_hook() -> None:
    """The policy hook refuses a write out of range as not_allowed, with its detail."""

    def policy(cmd: Command) -> str | None:
        value = cmd.args.get("value")
        if not isinstance(value, int | float) or not 0 <= value <= 100:
            return "dim must be within 0..100"
        return None

    v = verifier(policy=policy)
    verdict = v.check(sign_command(write(140), AUTHORITY))
    assert (verdict.reason, verdict.detail) == ("not_allowed", "dim must be within 0..100")
    assert v.check(sign_command(write(60), AUTHORITY)).ok


def test_malformed() -> None:
    """Junk and truncated envelopes are malformed."""
    data = sign_command(write(40), AUTHORITY)
    for junk in (b"", b"hello", data[:-1], data + b"x", b"CEC1" + bytes(100)):
        assert verifier().check(junk).reason == "malformed"


def test_nonce_cache_is_bounded_without_reopening_replays() -> None:
    """A full cache evicts its oldest nonce and refuses anything not newer than it."""
    cache = NonceCache(window_s=300, max_entries=3)
    v = verifier(nonces=cache)
    cmds = [sign_command(write(i, at=NOW - 10 + i), AUTHORITY) for i in range(4)]
    assert all(v.check(c).ok for c in cmds)
    assert len(cache) == 3
    assert v.check(cmds[0]).reason == "expired"  # evicted, but not replayable


def test_nonce_cache_persists(tmp_path: Path) -> None:
    """A persisted cache still refuses a replay after a restart; a damaged file refuses all."""
    path = tmp_path / "nonces.json"
    data = sign_command(write(40), AUTHORITY)
    assert verifier(nonces=NonceCache(path=path)).check(data).ok
    assert verifier(nonces=NonceCache(path=path)).check(data).reason == "replayed_nonce"
    assert json.loads(path.read_text())["seen"]
    path.write_text("{broken")
    fresh = sign_command(write(41), AUTHORITY)
    with capture_logs() as logs:
        cache = NonceCache(path=path)
    assert [e["event"] for e in logs] == ["nonce_record_damaged"] and cache.damaged
    verdict = verifier(nonces=cache).check(fresh)
    assert verdict.reason == "expired" and "nonce record was damaged" in verdict.detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 400))
def test_fuzz_check_never_raises(junk: bytes, at: int) -> None:
    """Random bytes and mutated commands are rejected with a known reason, never raised."""
    data = bytearray(sign_command(write(1), AUTHORITY))
    data[at % len(data)] ^= 0x5A
    for candidate in (junk, b"CEC1" + junk, bytes(data)):
        verdict = verifier().check(candidate)
        assert verdict.ok or verdict.reason in REASONS
