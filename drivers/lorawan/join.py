"""OTAA for LoRaWAN 1.0.x: verify a join request, answer it, derive session keys.

Pure functions. The network side is :func:`verify_join_request` then
:func:`answer_join_request`; the device side (:func:`build_join_request`,
:func:`open_join_accept`) exists for emulators and round-trip tests.

Numbers (AppNonce, NetID, DevAddr, DevNonce) are ints; on the air they are
little-endian. A join accept's PHYPayload is
``MHDR | enc(AppNonce 3 | NetID 3 | DevAddr 4 | DLSettings | RxDelay | [CFList 16] | MIC)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import crypto, phy
from cityedge.drivers.lorawan.crypto import SessionKeys, derive_session_keys

__all__ = [
    "JoinAccept",
    "SessionKeys",
    "answer_join_request",
    "build_join_accept",
    "build_join_request",
    "derive_session_keys",
    "open_join_accept",
    "verify_join_request",
]

_MHDR_ACCEPT = int(phy.MType.JoinAccept) << 5


@dataclass(frozen=True, slots=True)
class JoinAccept:
    """What the network grants a joining device."""

    app_nonce: int
    net_id: int
    dev_addr: int
    dl_settings: int = 0
    rx_delay: int = 1
    cflist: bytes | None = None

    def fields(self) -> bytes:
        """The plain fields after MHDR, before the MIC."""
        for name, value, top in (
            ("app_nonce", self.app_nonce, 0xFFFFFF),
            ("net_id", self.net_id, 0xFFFFFF),
            ("dev_addr", self.dev_addr, 0xFFFFFFFF),
            ("dl_settings", self.dl_settings, 0xFF),
            ("rx_delay", self.rx_delay, 0xFF),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{name} out of range: {value}")
        if self.cflist is not None and len(self.cflist) != 16:
            raise ValueError("CFList must be 16 bytes")
        return (
            self.app_nonce.to_bytes(3, "little")
            + self.net_id.to_bytes(3, "little")
            + self.dev_addr.to_bytes(4, "little")
            + bytes((self.dl_settings, self.rx_delay))
            + (self.cflist or b"")
        )


def build_join_request(join_eui: str, dev_eui: str, dev_nonce: int, app_key: bytes) -> bytes:
    """A signed join request PHYPayload, as a device sends it."""
    msg = (
        bytes((int(phy.MType.JoinRequest) << 5,))
        + phy.eui_bytes(join_eui)
        + phy.eui_bytes(dev_eui)
        + (dev_nonce & 0xFFFF).to_bytes(2, "little")
    )
    return msg + crypto.join_mic(app_key, msg)


def verify_join_request(request: phy.JoinRequest, app_key: bytes) -> bool:
    """True if the join request's MIC is right for ``app_key``."""
    return crypto.verify_join_mic(app_key, request.msg, request.mic)


def build_join_accept(accept: JoinAccept, app_key: bytes) -> bytes:
    """The encrypted join accept PHYPayload for a PULL_RESP."""
    msg = bytes((_MHDR_ACCEPT,)) + accept.fields()
    mic = crypto.join_mic(app_key, msg)
    return msg[:1] + crypto.encrypt_join_accept(app_key, msg[1:] + mic)


def open_join_accept(phy_payload: bytes, app_key: bytes) -> JoinAccept:
    """Decrypt and check a join accept (the device side). Raises DecodeError."""
    frame = phy.parse_phy(phy_payload)
    if not isinstance(frame, phy.EncryptedJoinAccept):
        raise DecodeError("not_join_accept", type(frame).__name__)
    plain = crypto.decrypt_join_accept(app_key, frame.encrypted)
    body, mic = plain[:-4], plain[-4:]
    if not crypto.verify_join_mic(app_key, bytes((frame.mhdr,)) + body, mic):
        raise DecodeError("bad_mic", "join accept MIC does not match the AppKey")
    return JoinAccept(
        app_nonce=int.from_bytes(body[0:3], "little"),
        net_id=int.from_bytes(body[3:6], "little"),
        dev_addr=int.from_bytes(body[6:10], "little"),
        dl_settings=body[10],
        rx_delay=body[11],
        cflist=bytes(body[12:28]) if len(body) == 28 else None,
    )


def answer_join_request(
    request: phy.JoinRequest, app_key: bytes, accept: JoinAccept
) -> tuple[bytes, SessionKeys]:
    """Verify ``request``; return the encrypted accept and the new session keys.

    Raises DecodeError("bad_mic") if the request is not signed with ``app_key``.
    The caller must also refuse a DevNonce the device has used before.
    """
    if not verify_join_request(request, app_key):
        raise DecodeError("bad_mic", "join request MIC does not match the AppKey")
    keys = derive_session_keys(app_key, accept.app_nonce, accept.net_id, request.dev_nonce)
    return build_join_accept(accept, app_key), keys
