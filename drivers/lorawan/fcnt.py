"""32-bit frame counters from the 16 bits on the air (LoRaWAN 1.0.x 4.3.1.5).

A device counts uplinks in 32 bits but sends only the low 16. The receiver
keeps the last accepted 32-bit counter and takes, among the values with the
frame's low 16 bits, the one just above it, accepting jumps of at most
:data:`MAX_FCNT_GAP`. Anything at or below the last counter is a replay.

Pure functions: persisting the last counter is the driver's job.
"""

from __future__ import annotations

MAX_FCNT_GAP = 16384
FCNT32_MAX = 0xFFFFFFFF
_EPOCH = 0x10000


def _candidates(fcnt16: int, around: int) -> list[int]:
    """Values with low 16 bits ``fcnt16`` in the epochs around ``around``."""
    base = (around & ~0xFFFF) | (fcnt16 & 0xFFFF)
    return [c for c in (base - _EPOCH, base, base + _EPOCH) if 0 <= c <= FCNT32_MAX]


def infer_fcnt(fcnt16: int, last: int | None) -> int:
    """The 32-bit counter of a frame whose 16-bit FCnt is ``fcnt16``.

    With no counter seen yet (a new session) it is ``fcnt16`` itself. Else it
    is the candidate in ``(last, last + MAX_FCNT_GAP]`` when there is one;
    otherwise the candidate nearest ``last``, so that :func:`is_replay` or
    :func:`is_gap_too_large` then tells the caller why to reject the frame.
    """
    if not 0 <= fcnt16 <= 0xFFFF:
        raise ValueError(f"not a 16-bit FCnt: {fcnt16}")
    if last is None:
        return fcnt16
    cands = _candidates(fcnt16, last)
    for cand in cands:
        if last < cand <= last + MAX_FCNT_GAP:
            return cand
    # Ties (exactly half an epoch away) go to the lower value: a replay.
    return min(cands, key=lambda c: (abs(c - last), c))


def nearest_fcnt(fcnt16: int, hint: int) -> int:
    """The counter with low 16 bits ``fcnt16`` nearest ``hint`` (for decoding by hand)."""
    if not 0 <= fcnt16 <= 0xFFFF:
        raise ValueError(f"not a 16-bit FCnt: {fcnt16}")
    hint = min(max(hint, 0), FCNT32_MAX)
    return min(_candidates(fcnt16, hint), key=lambda c: (abs(c - hint), c))


def is_replay(fcnt32: int, last: int | None) -> bool:
    """True if a frame with counter ``fcnt32`` must be rejected as a replay."""
    return last is not None and fcnt32 <= last


def is_gap_too_large(fcnt32: int, last: int | None) -> bool:
    """True if the counter jumped more than MAX_FCNT_GAP past the last one."""
    return last is not None and fcnt32 - last > MAX_FCNT_GAP
