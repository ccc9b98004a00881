"""Batches signed and chained on their way out (the outbox's ``seal`` hook).

The signer daemon holds the key; this process only sends it digests. The
chain state lives in the outbox next to the batches and moves in the same
transaction, so a restart, a crash or an outbox rebuilt after corruption
(which starts a new, declared epoch) never leaves a silent hole in the chain.
"""

from __future__ import annotations

import structlog

from cityedge.signing.chain import BatchSealer, ChainState, DigestSigner

log = structlog.get_logger("cityedge.uplink")


class UplinkSealer:
    """``seal(payload, stored_state) -> (envelope, state)`` for Outbox.cut_batch."""

    def __init__(self, signer: DigestSigner, gateway_id: str) -> None:
        self.sealer = BatchSealer(signer, gateway_id)
        self.sealed = 0

    @property
    def key_id(self) -> bytes | None:
        """The key the last batch was sealed with (None before the first)."""
        return self.sealer.key_id

    def __call__(self, payload: bytes, stored: str | None) -> tuple[bytes, str]:
        state = self._state(stored)
        envelope, new = self.sealer.seal(payload, state)
        self.sealed += 1
        return envelope, new.to_json()

    @staticmethod
    def _state(stored: str | None) -> ChainState:
        if stored is None:
            state = ChainState.fresh()
            log.info("chain_started", epoch=state.epoch)
            return state
        try:
            return ChainState.from_json(stored)
        except ValueError as exc:
            state = ChainState.fresh()
            log.error("chain_state_unreadable", error=str(exc), new_epoch=state.epoch)
            return state
