"""Signed downlink commands: obeyed only when the city's authority signed them.

A command envelope (byte layout in docs/security.md)::

    "CEC1" | algorithm (1) | key id (32) | body length (4) | body | signature(s)

The body is UTF-8 JSON ``{"v":1,"command":..,"args":{..},"target":..,"ts":..,
"nonce":..}``; the signature(s) are over SHA-512 of everything before them,
as for batches. :meth:`CommandVerifier.check` runs, in order: parse
(``malformed``), signature by a configured authority key (``bad_signature``),
target gateway (``wrong_target``), timestamp within ``±window_s``
(``expired``), nonce not seen before (``replayed_nonce``), then the policy
hook (``not_allowed``; the agent checks e.g. "a write only to a writable
point, within its range"). Every rejection carries one of these reasons.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from cityedge.signing.algorithms import ALG_BY_CODE, ALG_CODES, PublicKey, signature_sizes
from cityedge.signing.envelope import digest_of
from cityedge.signing.keys import SigningKey

log = structlog.get_logger("cityedge.downlink")

MAGIC = b"CEC1"
_HEAD = struct.Struct(">4sB32sI")  # magic, algorithm, key id, body length
MAX_BODY = 64 * 1024
REASONS = ("bad_signature", "expired", "replayed_nonce", "wrong_target", "not_allowed", "malformed")


@dataclass(frozen=True, slots=True)
class Command:
    command: str
    args: dict[str, Any]
    target: str
    ts: float
    nonce: str

    def to_body(self) -> bytes:
        doc = {
            "v": 1,
            "command": self.command,
            "args": self.args,
            "target": self.target,
            "ts": self.ts,
            "nonce": self.nonce,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def new_command(
    command: str, args: dict[str, Any], target: str, *, now: float | None = None
) -> Command:
    """A command stamped now with a random 128-bit nonce."""
    ts = time.time() if now is None else now
    return Command(command, args, target, ts, secrets.token_hex(16))


def sign_command(cmd: Command, key: SigningKey) -> bytes:
    """The authority's side: the signed envelope of ``cmd``."""
    body = cmd.to_body()
    if len(body) > MAX_BODY:
        raise ValueError(f"command body over {MAX_BODY} bytes")
    signed = _HEAD.pack(MAGIC, ALG_CODES[key.algorithm], key.key_id, len(body)) + body
    return signed + b"".join(key.sign_digest(digest_of(signed)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok`` with the command, or a rejection ``reason`` (one of REASONS)."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    command: Command | None = None


class _Malformed(ValueError):
    pass


def _parse(payload: bytes) -> tuple[str, bytes, bytes, tuple[bytes, ...], Command]:
    """(algorithm, key id, signed part, signatures, command) or _Malformed."""
    if len(payload) < _HEAD.size or payload[:4] != MAGIC:
        raise _Malformed("not a cityedge command (magic)")
    _m, code, key_id, blen = _HEAD.unpack_from(payload)
    algorithm = ALG_BY_CODE.get(code)
    if algorithm is None:
        raise _Malformed(f"unknown algorithm code {code}")
    sizes = signature_sizes(algorithm)
    end = _HEAD.size + blen
    if blen > MAX_BODY or len(payload) != end + sum(sizes):
        raise _Malformed("length does not match the header")
    sigs, at = [], end
    for size in sizes:
        sigs.append(payload[at : at + size])
        at += size
    try:
        doc = json.loads(payload[_HEAD.size : end])
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise _Malformed("not a version 1 command body")
        ts = doc["ts"]
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise _Malformed("ts must be a number of seconds")
        cmd = Command(doc["command"], doc["args"], doc["target"], float(ts), doc["nonce"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise _Malformed(f"body: {exc!r}") from exc
    if not (
        isinstance(cmd.command, str)
        and isinstance(cmd.args, dict)
        and isinstance(cmd.target, str)
        and isinstance(cmd.nonce, str)
        and 16 <= len(cmd.nonce) <= 128
    ):
        raise _Malformed("command, target and nonce (16..128 chars) are strings, args an object")
    return algorithm, key_id, payload[:end], tuple(sigs), cmd


@dataclass
class NonceCache:
    """Nonces seen within the freshness window; bounded, optionally persisted.

    An entry can be forgotten once its timestamp is outside the window (the
    command would be ``expired`` anyway). When more than ``max_entries`` are
    live, the oldest is evicted and ``floor_ts`` rises to its timestamp: a
    command not newer than the floor is refused as expired, so an eviction
    never reopens a replay.
    """

    window_s: float = 300.0
    max_entries: int = 10_000
    path: Path | None = None
    floor_ts: float = float("-inf")
    damaged: bool = False  # the file was unreadable at start: floor_ts set a window ahead
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                self.floor_ts = float(doc.get("floor_ts", self.floor_ts))
                for nonce, ts in sorted(doc["seen"].items(), key=lambda kv: kv[1]):
                    self._seen[str(nonce)] = float(ts)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                # A damaged file must not open a replay hole: refuse all that it could hold.
                self.floor_ts = time.time() + self.window_s
                self._seen.clear()
                self.damaged = True
                log.error("nonce_record_damaged", path=str(self.path), error=str(exc),
                          hint="commands stamped before the floor are refused until it passes",
                          floor_ts=self.floor_ts)  # fmt: skip

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, nonce: str) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, ts: float, now: float) -> None:
        self._expire(now)
        self._seen[nonce] = ts
        while len(self._seen) > self.max_entries:
            _old, old_ts = self._seen.popitem(last=False)
            self.floor_ts = max(self.floor_ts, old_ts)
        self._save()

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        stale = [n for n, ts in self._seen.items() if ts < cutoff]
        for n in stale:
            del self._seen[n]

    def _save(self) -> None:
        if self.path is None:
            return
        doc: dict[str, Any] = {"seen": dict(self._seen)}
        if math.isfinite(self.floor_ts):
            doc["floor_ts"] = self.floor_ts
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)


# policy(command) -> None to allow, or a reason detail to refuse ("not_allowed")
Policy = Callable[[Command], str | None]


class CommandVerifier:
    """Checks signed commands for one gateway."""

    def __init__(
        self,
        authority_keys: Sequence[PublicKey | str],
        gateway_id: str,
        *,
        window_s: float = 300.0,
        nonces: NonceCache | None = None,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = {}
        for k in authority_keys:
            key = PublicKey.from_text(k) if isinstance(k, str) else k
            self._keys[key.key_id] = key
        self.gateway_id = gateway_id
        self.window_s = window_s
        self.nonces = nonces if nonces is not None else NonceCache(window_s)
        self.policy = policy
        self.clock = clock
        self.counters: dict[str, int] = {"accepted": 0, **{r: 0 for r in REASONS}}

    def check(self, payload: bytes) -> Verdict:
        """Accept or reject one command envelope; never raises on bad input."""
        verdict = self._check(payload)
        self.counters["accepted" if verdict.ok else str(verdict.reason)] += 1
        return verdict

    def _check(self, payload: bytes) -> Verdict:
        try:
            algorithm, key_id, signed, sigs, cmd = _parse(payload)
        except _Malformed as exc:
            return Verdict(False, "malformed", str(exc))
        key = self._keys.get(key_id)
        if key is None or key.algorithm != algorithm:
            return Verdict(False, "bad_signature", "not signed by a configured authority key")
        if not key.verify(digest_of(signed), sigs):
            return Verdict(False, "bad_signature", "signature does not verify")
        if cmd.target != self.gateway_id:
            return Verdict(False, "wrong_target", f"for {cmd.target!r}", cmd)
        now = self.clock()
        if cmd.ts <= self.nonces.floor_ts and abs(now - cmd.ts) <= self.window_s:
            why = (
                "the nonce record was damaged and reset"
                if self.nonces.damaged
                else "the nonce record was full and evicted older nonces"
            )
            after = f"{self.nonces.floor_ts:.0f}"
            floor = f"stamped before the replay floor ({why}); send it anew after {after}"
            return Verdict(False, "expired", floor, cmd)
        if abs(now - cmd.ts) > self.window_s:
            age = now - cmd.ts
            when = f"{age:.0f} s old" if age >= 0 else f"{-age:.0f} s in the future"
            return Verdict(False, "expired", f"{when}, window ±{self.window_s:.0f} s", cmd)
        if self.nonces.seen(cmd.nonce):
            return Verdict(False, "replayed_nonce", cmd.nonce, cmd)
        self.nonces.add(cmd.nonce, cmd.ts, now)
        if self.policy is not None:
            refusal = self.policy(cmd)
            if refusal is not None:
                return Verdict(False, "not_allowed", refusal, cmd)
        return Verdict(True, command=cmd)
