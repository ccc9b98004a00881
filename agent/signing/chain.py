"""The per-gateway hash chain of batches, as a pure step function.

One chain per gateway. Batch ``seq`` rises by one per batch from 1 within an
*epoch*; ``prev`` is the SHA-256 of the previous batch's signed part (32 zero
bytes for the first batch of an epoch). A new epoch (a random u64) starts only
when the chain state is lost (a fresh install, an outbox that had to be
rebuilt): the hub sees it as a declared restart, never as a silent one.

The state is three values and serialises to one short JSON string, so the
outbox keeps it in its ``meta`` table under :data:`META_KEY` and updates it in
the same SQLite transaction that cuts the batch: a batch exists in the outbox
if and only if the chain has advanced past it. This module writes nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from cityedge.signing.envelope import (
    HASH_SIZE,
    U64_MAX,
    ZERO_HASH,
    Header,
    digest_of,
    link_hash_of,
    seal,
)
from cityedge.signing.protocol import KeyChanged, KeyInfo

META_KEY = "signing.chain"


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where the chain stands: the epoch, the last seq issued and its link hash."""

    epoch: int
    seq: int = 0
    last_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        if not (0 <= self.epoch <= U64_MAX and 0 <= self.seq < U64_MAX):
            raise ValueError("chain epoch and seq must be u64")
        if len(self.last_hash) != HASH_SIZE:
            raise ValueError("chain hash must be 32 bytes")

    @classmethod
    def fresh(cls, epoch: int | None = None) -> ChainState:
        """A new chain: a random epoch unless given, no batch yet."""
        return cls(secrets.randbits(64) if epoch is None else epoch)

    def to_json(self) -> str:
        return json.dumps(
            {"v": 1, "epoch": self.epoch, "seq": self.seq, "last": self.last_hash.hex()},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ChainState:
        """Parse a stored state. Raises ValueError on anything else."""
        try:
            doc = json.loads(text)
            if doc.get("v") != 1:
                raise ValueError("unknown chain state version")
            return cls(int(doc["epoch"]), int(doc["seq"]), bytes.fromhex(doc["last"]))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a chain state: {exc}") from exc


@dataclass(frozen=True, slots=True)
class LinkFields:
    """The header fields the chain does not decide."""

    gateway_id: str
    algorithm: str
    key_id: bytes


def next_link(state: ChainState, fields: LinkFields, body: bytes) -> tuple[Header, ChainState]:
    """The header of the next batch and the state after it.

    The body is needed because the next ``prev`` is the hash of this batch's
    header and body (not of its signatures, so it is known before signing).
    """
    header, signed = _link(state, fields, body)
    return header, ChainState(state.epoch, header.seq, link_hash_of(signed))


def _link(state: ChainState, fields: LinkFields, body: bytes) -> tuple[Header, bytes]:
    header = Header(
        fields.gateway_id,
        state.epoch,
        state.seq + 1,
        state.last_hash,
        fields.algorithm,
        fields.key_id,
    )
    return header, header.encode(len(body)) + body


class DigestSigner(Protocol):
    """What :class:`BatchSealer` needs: a blocking signer of 64-byte digests.

    :class:`cityedge.signing.signer_client.SyncSignerClient` (the signer
    daemon) and :class:`cityedge.signing.signer_client.LocalSigner` (a key in
    this process: tests, benchmarks, the hub's tools) implement it.
    """

    def key_info(self) -> KeyInfo: ...

    def sign(self, digest: bytes, key_id: bytes) -> tuple[bytes, ...]: ...


class BatchSealer:
    """Wraps v1 bodies into signed, chained v2 envelopes.

    Blocking; meant to run inside the outbox's cut transaction (the outbox
    thread). Raises :class:`~cityedge.signing.protocol.SignerUnavailable`
    when the signer is down: roll the cut back, nothing leaves unsigned.
    """

    def __init__(self, signer: DigestSigner, gateway_id: str) -> None:
        self.signer = signer
        self.gateway_id = gateway_id
        self._info: KeyInfo | None = None
        # Successful signatures and the time they took (metrics: signer latency).
        self.latency_sum_s = 0.0
        self.latency_count = 0

    @property
    def key_id(self) -> bytes | None:
        """The id of the key the last batch was signed with (None before the first)."""
        return None if self._info is None else self._info.key_id

    def seal(self, body: bytes, state: ChainState) -> tuple[bytes, ChainState]:
        """The envelope for ``body`` and the chain state to store with it."""
        try:
            return self._seal(body, state)
        except KeyChanged:
            self._info = None  # rotated under us: the header names the key, rebuild it
            return self._seal(body, state)

    def _seal(self, body: bytes, state: ChainState) -> tuple[bytes, ChainState]:
        if self._info is None:
            self._info = self.signer.key_info()
        fields = LinkFields(self.gateway_id, self._info.algorithm, self._info.key_id)
        header, signed = _link(state, fields, body)
        started = time.perf_counter()
        sigs = self.signer.sign(digest_of(signed), self._info.key_id)
        self.latency_sum_s += time.perf_counter() - started
        self.latency_count += 1
        envelope = seal(header, body, sigs)
        return envelope, ChainState(state.epoch, header.seq, link_hash_of(signed))
