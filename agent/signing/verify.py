"""The hub-side verifier: signatures, chains, gaps, duplicates, rotations.

    v = Verifier({"gw-0001": ["ed25519 AAAA..."]}, rotations=[stmt_bytes])
    for msg in read_capture(path):
        for finding in v.feed(msg.topic, msg.payload):
            print(finding.to_json())
    v.finish()          # holes still open at the end become gaps
    v.report()          # {gateway: GatewayReport}

Per gateway and chain epoch, a batch is *verified* when its signature checks
with a key trusted for that gateway (directly, or through rotation
statements from a trusted key) and its ``prev`` matches the batch before it
whenever that one has been seen. Findings:

``tampered``      bad signature, a broken link, or two different validly
                  signed batches with the same seq (a fork)
``duplicate``     the same seq with the same bytes (at-least-once delivery)
``reordered``     a batch that arrives after a later one
``gap``           seqs never seen: reported once they are ``reorder_window``
                  behind the newest, or at :meth:`Verifier.finish`
``unknown_key``   an unknown gateway, or a key not trusted for it
``malformed``     not a v2 envelope / rotation statement, or an unreadable body
``declared_drop`` the gateway declared readings its outbox dropped (info)
``new_epoch``     the gateway started a new chain (its chain state was lost)
``topic_mismatch`` the topic names another gateway than the signed header
``bad_rotation``  a rotation statement whose signatures do not check

A clean capture yields no finding. Memory per chain is bounded by
``window`` seqs of link hashes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from cityedge.signing.algorithms import PublicKey
from cityedge.signing.envelope import (
    ZERO_HASH,
    Envelope,
    EnvelopeError,
    is_rotation,
    open_envelope,
    open_rotation,
)

KINDS = (
    "tampered",
    "duplicate",
    "reordered",
    "gap",
    "unknown_key",
    "malformed",
    "declared_drop",
    "new_epoch",
    "topic_mismatch",
    "bad_rotation",
)
_HEAD_PEEK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    gateway: str | None
    topic: str
    epoch: int | None = None
    seq: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


@dataclass(slots=True)
class GatewayReport:
    verified: int = 0
    gap: int = 0
    duplicate: int = 0
    reordered: int = 0
    tampered: int = 0
    unknown_key: int = 0
    malformed: int = 0
    declared_drops: int = 0  # readings the gateway declared dropped
    epochs: int = 0
    rotations: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Link:
    link_hash: bytes
    prev: bytes
    payload_hash: bytes


@dataclass(slots=True)
class _Chain:
    low: int
    high: int
    links: dict[int, _Link] = field(default_factory=dict)
    holes: set[int] = field(default_factory=set)  # not yet reported
    gapped: set[int] = field(default_factory=set)  # reported as gap, still missing


class Verifier:
    """Feed it messages in arrival order; not thread-safe (one per core)."""

    def __init__(
        self,
        trusted_keys: Mapping[str, Sequence[PublicKey | str]],
        rotations: Iterable[bytes] = (),
        *,
        window: int = 4096,
        reorder_window: int = 64,
        expect_start: bool = False,
        inspect_bodies: bool = True,
    ) -> None:
        self._keys: dict[str, dict[bytes, PublicKey]] = {}
        for gw, pubs in trusted_keys.items():
            for pub in pubs:
                key = PublicKey.from_text(pub) if isinstance(pub, str) else pub
                self._keys.setdefault(gw, {})[key.key_id] = key
        self._pending_rotations: list[bytes] = []
        self.window = window
        self.reorder_window = reorder_window
        self.expect_start = expect_start
        self.inspect_bodies = inspect_bodies
        self._chains: dict[tuple[str, int], _Chain] = {}
        self._reports: dict[str, GatewayReport] = {}
        for stmt in rotations:
            self.add_rotation(stmt)

    # -- keys ------------------------------------------------------------------

    def add_rotation(self, data: bytes, topic: str = "") -> list[Finding]:
        """Trust a rotation statement's new key wherever its old key is trusted."""
        try:
            stmt = open_rotation(data)
        except EnvelopeError as exc:
            return [self._count(Finding("malformed", None, topic, detail=str(exc)))]
        found = False
        for gw, keys in self._keys.items():
            old = keys.get(stmt.old_key_id)
            if old is None:
                continue
            found = True
            if not stmt.verify(old):
                f = Finding("bad_rotation", gw, topic, detail=stmt.new_key.key_id.hex()[:16])
                return [self._count(f)]
            if stmt.new_key.key_id not in keys:
                keys[stmt.new_key.key_id] = stmt.new_key
                self._report(gw).rotations += 1
        if found:
            self._retry_pending()
        elif data not in self._pending_rotations:
            self._pending_rotations.append(data)  # its old key may be introduced later
        return []

    def _keys_message(self, topic: str, payload: bytes) -> list[Finding]:
        """The gateway's retained keys message: JSON whose ``rotations`` are base64 statements."""
        try:
            doc = json.loads(payload)
            statements = [base64.b64decode(r, validate=True) for r in doc.get("rotations", [])]
        except (ValueError, TypeError, AttributeError, binascii.Error):
            detail = "keys message: not JSON with base64 rotations"
            return [self._count(Finding("malformed", _topic_gateway(topic), topic, detail=detail))]
        out: list[Finding] = []
        for stmt in statements:
            out += self.add_rotation(stmt, topic)
        return out

    def _retry_pending(self) -> None:
        pending, self._pending_rotations = self._pending_rotations, []
        for data in pending:
            self.add_rotation(data)

    # -- messages ------------------------------------------------------------------

    def feed(self, topic: str, payload: bytes) -> list[Finding]:
        """Check one message; returns its findings (empty when all is well)."""
        if is_rotation(payload):
            return self.add_rotation(payload, topic)
        if topic.endswith("/keys"):
            return self._keys_message(topic, payload)
        try:
            env = open_envelope(payload)
        except EnvelopeError as exc:
            return [
                self._count(Finding("malformed", _topic_gateway(topic), topic, detail=str(exc)))
            ]
        h = env.header
        gw = h.gateway_id
        out: list[Finding] = []
        keys = self._keys.get(gw)
        key = keys.get(h.key_id) if keys else None
        if key is None or key.algorithm != h.algorithm:
            detail = "unknown gateway" if keys is None else f"key {h.key_id.hex()[:16]}"
            return [self._count(Finding("unknown_key", gw, topic, h.epoch, h.seq, detail))]
        if not key.verify(env.digest, env.signatures):
            return [self._count(Finding("tampered", gw, topic, h.epoch, h.seq, "bad signature"))]
        tg = _topic_gateway(topic)
        if tg is not None and tg != gw:
            out.append(Finding("topic_mismatch", gw, topic, h.epoch, h.seq, f"topic names {tg}"))
        out.extend(self._chain(topic, env, hashlib.sha256(payload).digest()))
        for f in out:
            self._count(f)
        return out

    def _chain(self, topic: str, env: Envelope, payload_hash: bytes) -> list[Finding]:
        h = env.header
        gw, seq = h.gateway_id, h.seq
        out: list[Finding] = []

        def finding(kind: str, detail: str = "", at: int = seq) -> None:
            out.append(Finding(kind, gw, topic, h.epoch, at, detail))

        chain = self._chains.get((gw, h.epoch))
        if chain is None:
            report = self._report(gw)
            if report.epochs:
                finding("new_epoch", f"epoch {h.epoch:016x}")
            report.epochs += 1
            start = 1 if self.expect_start else seq
            chain = self._chains[(gw, h.epoch)] = _Chain(low=start, high=start - 1)
            chain.holes.update(range(start, seq))
        link = _Link(env.link_hash, h.prev, payload_hash)
        known = chain.links.get(seq)
        forgotten = seq < chain.high - self.window and seq not in chain.gapped
        if known is None and seq < chain.low - self.reorder_window:
            forgotten = True  # sent before this verifier started watching: an old copy
        if known is not None or forgotten:
            if known is None or known.payload_hash == payload_hash:
                finding("duplicate")
            else:
                finding("tampered", "fork: another validly signed batch has this seq")
            return out
        if seq == 1 and h.prev != ZERO_HASH:
            finding("tampered", "first batch of an epoch must have a zero prev")
        before, after = chain.links.get(seq - 1), chain.links.get(seq + 1)
        if before is not None and before.link_hash != h.prev:
            finding("tampered", "chain break: prev is not the hash of the batch before")
        if after is not None and after.prev != link.link_hash:
            finding("tampered", "chain break: the next batch names another prev", seq + 1)
        chain.links[seq] = link
        if seq < chain.low:
            chain.holes.update(range(seq + 1, chain.low))
            chain.low = seq
        if seq < chain.high:
            finding("reordered", f"arrived after {chain.high}")
            chain.holes.discard(seq)
            if seq in chain.gapped:
                chain.gapped.discard(seq)
                self._report(gw).gap -= 1
        else:
            chain.holes.update(range(chain.high + 1, seq))
            chain.high = seq
        if not any(f.kind == "tampered" for f in out):
            self._report(gw).verified += 1
        if self.inspect_bodies:
            out.extend(self._declared(topic, env))
        out.extend(self._expire(gw, topic, h.epoch, chain, chain.high - self.reorder_window))
        if len(chain.links) > 2 * self.window:
            floor = chain.high - self.window
            chain.links = {s: lk for s, lk in chain.links.items() if s >= floor}
        return out

    def _declared(self, topic: str, env: Envelope) -> list[Finding]:
        h = env.header
        try:
            drops = _declared_drops(env.body)
        except ValueError as exc:
            return [Finding("malformed", h.gateway_id, topic, h.epoch, h.seq, f"body: {exc}")]
        if not drops:
            return []
        count = sum(int(d.get("count", 0)) for d in drops)
        self._report(h.gateway_id).declared_drops += count
        ranges = ", ".join(
            f"{d.get('kind')} {d.get('first_seq')}..{d.get('last_seq')}" for d in drops
        )
        return [Finding("declared_drop", h.gateway_id, topic, h.epoch, h.seq, f"{count}: {ranges}")]

    def _expire(self, gw: str, topic: str, epoch: int, chain: _Chain, upto: int) -> list[Finding]:
        due = sorted(s for s in chain.holes if s <= upto)
        if not due:
            return []
        chain.holes.difference_update(due)
        chain.gapped.update(due)
        self._report(gw).gap += len(due)
        out = []
        for first, last in _ranges(due):
            n = last - first + 1
            detail = f"{n} batch{'es' if n > 1 else ''} missing: {first}..{last}"
            out.append(Finding("gap", gw, topic, epoch, first, detail))
        return out

    def finish(self) -> list[Finding]:
        """End of input: every hole still open becomes a gap finding."""
        out: list[Finding] = []
        for (gw, epoch), chain in self._chains.items():
            out.extend(self._expire(gw, "", epoch, chain, chain.high))
        return out

    # -- counting --------------------------------------------------------------------

    def _report(self, gw: str | None) -> GatewayReport:
        return self._reports.setdefault(gw or "?", GatewayReport())

    def _count(self, f: Finding) -> Finding:
        attr = {"bad_rotation": "tampered", "topic_mismatch": None, "new_epoch": None}.get(
            f.kind, f.kind
        )
        if attr in ("tampered", "duplicate", "reordered", "unknown_key", "malformed"):
            report = self._report(f.gateway)
            setattr(report, attr, getattr(report, attr) + 1)
        return f

    def report(self) -> dict[str, GatewayReport]:
        """Counts per gateway (``?`` for messages naming no gateway)."""
        return dict(self._reports)


def _ranges(seqs: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            yield start, prev
            start = s
        prev = s
    yield start, prev


def _topic_gateway(topic: str) -> str | None:
    """``<prefix>/<site>/<gateway>/<kind>`` -> gateway (None for other shapes)."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 4 else None


def _declared_drops(body: bytes) -> list[dict[str, Any]]:
    """The ``dropped`` list of a v1 body, inflating only its head when possible."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, _HEAD_PEEK)
        cut = raw.find(b',"readings":[')
        if cut < 0:
            if inflater.unconsumed_tail:
                from cityedge.uplink.codec import BadPayload, decode_batch

                try:
                    doc = decode_batch(body)
                except BadPayload as exc:
                    raise ValueError(str(exc)) from exc
            else:
                doc = json.loads(raw)
        else:
            doc = json.loads(raw[:cut] + b"}")
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a version 1 batch body")
    drops = doc.get("dropped", [])
    if not isinstance(drops, list) or not all(isinstance(d, dict) for d in drops):
        raise ValueError("dropped is not a list of ranges")
    return drops


# -- capture files ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


class CaptureError(ValueError):
    """A capture line that is not ``{"topic": str, "payload": base64}``."""


def capture_line(topic: str, payload: bytes) -> str:
    """One JSON Lines record of the capture format (with its newline)."""
    doc = {"topic": topic, "payload": base64.b64encode(payload).decode()}
    return json.dumps(doc, separators=(",", ":")) + "\n"


def write_capture(dest: Path | IO[str], messages: Iterable[Message | tuple[str, bytes]]) -> int:
    """Write messages as JSON Lines; returns how many."""
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(dest.open("w")) if isinstance(dest, Path) else dest
        n = 0
        for m in messages:
            topic, payload = (m.topic, m.payload) if isinstance(m, Message) else m
            f.write(capture_line(topic, payload))
            n += 1
        return n


def read_capture(path: Path) -> Iterator[Message]:
    """Messages of a capture file; a bad line raises CaptureError naming file:line."""
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                topic, payload = doc["topic"], doc["payload"]
                if not isinstance(topic, str) or not isinstance(payload, str):
                    raise TypeError("topic and payload must be strings")
                yield Message(topic, base64.b64decode(payload, validate=True))
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise CaptureError(f"{path}:{lineno}: {exc}") from exc
