"""``relaxed_fcnt``: when a frame counter that went back is taken as a device restart.

Some ABP devices start counting uplinks from 0 again at every power cycle
(older firmware; LoRaWAN 1.0.4 requires the counters to survive one). A strict network server
then refuses all their frames as replays until the counter passes the old
one. With ``relaxed_fcnt = true`` on the device, a frame whose counter went
back is accepted as a restart, and the session counts on from there, only if

* its 16-bit counter is below :data:`RESET_WINDOW`: a device that restarted
  counts from 0, so a frame from the middle of an old session is not one;
* its MIC checks with that counter taken as the whole 32-bit counter (the
  device restarted in epoch 0);
* its bytes are not those of a frame accepted before: the fingerprints of
  the frames accepted in the window are kept with the session, in the state
  file (at most :data:`SEEN_MAX`), so a captured restart frame played back
  later, even after an agent restart, is still a replay.

What is left (docs/profile-sources-lorawan.md, "Frame counters"): after a
real restart, frames of the previous power cycle with counters above the new
one verify again, and a frame first seen in the window of an earlier power
cycle that this gateway never heard is not known. That is the price of
resets; devices that keep their counter should leave the key off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from cityedge.drivers.lorawan import crypto, fcnt, phy
from cityedge.drivers.lorawan.devices import Device
from cityedge.drivers.lorawan.sessions import Session

RESET_WINDOW = 16
"""A counter that went back is a restart only below this."""

SEEN_MAX = 16 * RESET_WINDOW
"""Fingerprints kept per device (8 bytes each): the windows of the last 16 power cycles."""


def fingerprint(phy_payload: bytes) -> str:
    """A short digest of a frame's bytes (64 bits of SHA-256), as kept in the state file."""
    return hashlib.sha256(phy_payload).digest()[:8].hex()


def may_be_reset(fcnt16: int, fcnt32: int, last: int | None) -> bool:
    """True if a frame a strict server refuses could be a restart: small and behind."""
    if last is None or fcnt16 >= RESET_WINDOW:
        return False
    return fcnt.is_replay(fcnt32, last) or fcnt.is_gap_too_large(fcnt32, last)


def seen(session: Session, phy_payload: bytes) -> bool:
    """True if these bytes were accepted before in the reset window."""
    return fingerprint(phy_payload) in session.reset_seen


def remember(session: Session, fcnt32: int, phy_payload: bytes) -> None:
    """Keep the fingerprint of an accepted frame whose counter is in the window."""
    if fcnt32 < RESET_WINDOW:
        session.reset_seen.append(fingerprint(phy_payload))
        del session.reset_seen[:-SEEN_MAX]


def verify(
    devices: Iterable[Device], frame: phy.DataFrame, is_copy: Callable[[int, int, bytes], bool]
) -> tuple[Device, int, bool] | None:
    """The device whose NwkSKey signs ``frame``, its 32-bit FCnt, and whether it is a restart.

    Only a MIC that checks counts: with the inferred counter, or for a relaxed
    device with the frame's own 16 bits when :func:`may_be_reset` (and it is not
    another gateway's copy of a restart frame just accepted, ``is_copy``).
    """
    for dev in devices:
        s = dev.session
        fcnt32 = fcnt.infer_fcnt(frame.fcnt16, s.fcnt_up)
        if (
            dev.relaxed
            and may_be_reset(frame.fcnt16, fcnt32, s.fcnt_up)
            and not is_copy(frame.dev_addr, frame.fcnt16, frame.msg + frame.mic)
            and _mic_ok(s, frame, frame.fcnt16)
        ):
            return dev, frame.fcnt16, True
        if _mic_ok(s, frame, fcnt32):
            return dev, fcnt32, False
    return None


def _mic_ok(s: Session, frame: phy.DataFrame, fcnt32: int) -> bool:
    assert s.nwk_s_key is not None
    return crypto.verify_data_mic(s.nwk_s_key, frame.dev_addr, fcnt32, True, frame.msg, frame.mic)
