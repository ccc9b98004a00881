"""LoRaWAN 1.0.x PHYPayload: parse and build data frames, parse join messages.

Pure: bytes in, values out. Multi-byte fields are little-endian on the air;
DevAddr and EUIs are *shown* most-significant byte first, as network servers
print them (``dev_addr_hex``). Anything malformed raises
:class:`~cityedge.drivers.base.DecodeError` with a short ``reason``.

A join accept is encrypted on the air; :func:`parse_phy` returns it as
:class:`EncryptedJoinAccept` and :mod:`.join` decrypts it with the AppKey.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import crypto

MAX_PHY = 255
"""A LoRa frame carries at most 255 bytes."""
MIN_DATA = 12  # MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + MIC 4
JOIN_REQUEST_SIZE = 23


class MType(enum.IntEnum):
    """The message type in the top three bits of MHDR."""

    JoinRequest = 0
    JoinAccept = 1
    UnconfirmedDataUp = 2
    UnconfirmedDataDown = 3
    ConfirmedDataUp = 4
    ConfirmedDataDown = 5
    RFU = 6
    Proprietary = 7


UPLINK_TYPES = (MType.UnconfirmedDataUp, MType.ConfirmedDataUp)
DATA_TYPES = (*UPLINK_TYPES, MType.UnconfirmedDataDown, MType.ConfirmedDataDown)

# CID -> (name, payload length) for the commands LoRaWAN 1.0.x defines, per direction.
UPLINK_MAC: dict[int, tuple[str, int]] = {
    0x02: ("LinkCheckReq", 0),
    0x03: ("LinkADRAns", 1),
    0x04: ("DutyCycleAns", 0),
    0x05: ("RXParamSetupAns", 1),
    0x06: ("DevStatusAns", 2),
    0x07: ("NewChannelAns", 1),
    0x08: ("RXTimingSetupAns", 0),
    0x09: ("TxParamSetupAns", 0),
    0x0A: ("DlChannelAns", 1),
    0x0D: ("DeviceTimeReq", 0),
}
DOWNLINK_MAC: dict[int, tuple[str, int]] = {
    0x02: ("LinkCheckAns", 2),
    0x03: ("LinkADRReq", 4),
    0x04: ("DutyCycleReq", 1),
    0x05: ("RXParamSetupReq", 4),
    0x06: ("DevStatusReq", 0),
    0x07: ("NewChannelReq", 5),
    0x08: ("RXTimingSetupReq", 1),
    0x09: ("TxParamSetupReq", 1),
    0x0A: ("DlChannelReq", 4),
    0x0D: ("DeviceTimeAns", 5),
}


class MacCommand(NamedTuple):
    """One MAC command: its name and payload (without the CID byte)."""

    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MacCommands:
    """MAC commands parsed from FOpts (or an FPort 0 payload).

    ``unparsed`` counts the bytes left when an unknown CID (or a command cut
    short) stopped parsing: the rest cannot be framed without knowing lengths.
    """

    commands: tuple[MacCommand, ...]
    unparsed: int = 0


def parse_mac_commands(data: bytes, uplink: bool) -> MacCommands:
    """Split MAC commands; stops at the first unknown CID or short command."""
    table = UPLINK_MAC if uplink else DOWNLINK_MAC
    found: list[MacCommand] = []
    pos = 0
    while pos < len(data):
        spec = table.get(data[pos])
        if spec is None or pos + 1 + spec[1] > len(data):
            break
        name, size = spec
        found.append(MacCommand(name, bytes(data[pos + 1 : pos + 1 + size])))
        pos += 1 + size
    return MacCommands(tuple(found), len(data) - pos)


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A data frame (MACPayload) with its header fields decoded."""

    mtype: MType
    major: int
    dev_addr: int
    fctrl: int
    fcnt16: int
    fopts: bytes
    fport: int | None
    frm_payload: bytes
    mic: bytes
    msg: bytes
    """MHDR | MACPayload: the bytes the MIC covers."""

    @property
    def uplink(self) -> bool:
        return self.mtype in UPLINK_TYPES

    @property
    def confirmed(self) -> bool:
        return self.mtype in (MType.ConfirmedDataUp, MType.ConfirmedDataDown)

    @property
    def dev_addr_hex(self) -> str:
        return f"{self.dev_addr:08X}"

    @property
    def adr(self) -> bool:
        return bool(self.fctrl & 0x80)

    @property
    def adr_ack_req(self) -> bool:
        """ADRACKReq (uplink only; the bit is RFU downlink)."""
        return self.uplink and bool(self.fctrl & 0x40)

    @property
    def ack(self) -> bool:
        return bool(self.fctrl & 0x20)

    @property
    def fpending(self) -> bool:
        """FPending (downlink only; uplink bit 4 is ClassB)."""
        return not self.uplink and bool(self.fctrl & 0x10)

    @property
    def class_b(self) -> bool:
        return self.uplink and bool(self.fctrl & 0x10)

    def mac_commands(self) -> MacCommands:
        """The MAC commands carried in FOpts."""
        return parse_mac_commands(self.fopts, self.uplink)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join request; EUIs shown most-significant byte first."""

    join_eui: str
    dev_eui: str
    dev_nonce: int
    mic: bytes
    msg: bytes


@dataclass(frozen=True, slots=True)
class EncryptedJoinAccept:
    """A join accept as received: everything after MHDR is encrypted."""

    mhdr: int
    encrypted: bytes


Frame = DataFrame | JoinRequest | EncryptedJoinAccept


def eui_hex(raw: bytes) -> str:
    """An on-air (little-endian) EUI as 16 hex digits, MSB first."""
    return raw[::-1].hex().upper()


def eui_bytes(eui: str) -> bytes:
    """Inverse of :func:`eui_hex`; raises ValueError on a malformed EUI."""
    raw = bytes.fromhex(eui)
    if len(raw) != 8:
        raise ValueError(f"EUI must be 8 bytes: {eui!r}")
    return raw[::-1]


def parse_phy(phy: bytes) -> Frame:
    """Parse a PHYPayload into a data frame, a join request or an encrypted accept."""
    if len(phy) < 1:
        raise DecodeError("too_short", "empty PHYPayload")
    if len(phy) > MAX_PHY:
        raise DecodeError("oversized", f"{len(phy)} bytes > {MAX_PHY}")
    mtype = MType(phy[0] >> 5)
    major = phy[0] & 0x03
    if major != 0:
        raise DecodeError("bad_major", f"major version {major} is not LoRaWAN R1")
    if mtype in DATA_TYPES:
        return _parse_data(mtype, phy)
    if mtype is MType.JoinRequest:
        return _parse_join_request(phy)
    if mtype is MType.JoinAccept:
        if len(phy) not in (17, 33):
            raise DecodeError("bad_length", f"join accept of {len(phy)} bytes")
        return EncryptedJoinAccept(phy[0], bytes(phy[1:]))
    raise DecodeError("unsupported_mtype", mtype.name)


def _parse_data(mtype: MType, phy: bytes) -> DataFrame:
    if len(phy) < MIN_DATA:
        raise DecodeError("too_short", f"data frame of {len(phy)} bytes")
    fctrl = phy[5]
    end_fhdr = 8 + (fctrl & 0x0F)
    body_end = len(phy) - crypto.MIC_SIZE
    if end_fhdr > body_end:
        raise DecodeError("truncated", "FOptsLen runs past the frame")
    fport = phy[end_fhdr] if end_fhdr < body_end else None
    if fport == 0 and end_fhdr > 8:
        raise DecodeError("bad_fopts", "MAC commands in both FOpts and an FPort 0 payload")
    return DataFrame(
        mtype=mtype,
        major=phy[0] & 0x03,
        dev_addr=int.from_bytes(phy[1:5], "little"),
        fctrl=fctrl,
        fcnt16=int.from_bytes(phy[6:8], "little"),
        fopts=bytes(phy[8:end_fhdr]),
        fport=fport,
        frm_payload=bytes(phy[end_fhdr + 1 : body_end]),
        mic=bytes(phy[body_end:]),
        msg=bytes(phy[:body_end]),
    )


def _parse_join_request(phy: bytes) -> JoinRequest:
    if len(phy) != JOIN_REQUEST_SIZE:
        raise DecodeError("bad_length", f"join request of {len(phy)} bytes")
    return JoinRequest(
        join_eui=eui_hex(phy[1:9]),
        dev_eui=eui_hex(phy[9:17]),
        dev_nonce=int.from_bytes(phy[17:19], "little"),
        mic=bytes(phy[19:]),
        msg=bytes(phy[:19]),
    )


def dev_addr_int(dev_addr: int | str) -> int:
    """A DevAddr given as an int or as 8 hex digits MSB first."""
    value = int(dev_addr, 16) if isinstance(dev_addr, str) else dev_addr
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"DevAddr out of range: {dev_addr!r}")
    return value


def build_data_frame(
    mtype: MType,
    dev_addr: int | str,
    fcnt: int,
    fport: int | None,
    payload: bytes,
    nwk_s_key: bytes,
    app_s_key: bytes,
    *,
    fopts: bytes = b"",
    fctrl_flags: int = 0,
) -> bytes:
    """Build, encrypt and sign a data frame; ``fcnt`` is the 32-bit counter.

    ``fctrl_flags`` carries the ADR/ADRACKReq/ACK/FPending bits (0xF0); the
    FOptsLen nibble comes from ``fopts``.
    """
    if mtype not in DATA_TYPES:
        raise ValueError(f"not a data message type: {mtype!r}")
    if len(fopts) > 15 or (fopts and fport == 0):
        raise ValueError("FOpts holds at most 15 bytes and must be empty with FPort 0")
    if fport is None and payload:
        raise ValueError("a payload needs an FPort")
    if not 0 <= fcnt <= 0xFFFFFFFF or (fport is not None and not 0 <= fport <= 255):
        raise ValueError("FCnt or FPort out of range")
    addr = dev_addr_int(dev_addr)
    uplink = mtype in UPLINK_TYPES
    msg = (
        bytes((mtype << 5,))
        + addr.to_bytes(4, "little")
        + bytes(((fctrl_flags & 0xF0) | len(fopts),))
        + (fcnt & 0xFFFF).to_bytes(2, "little")
        + fopts
    )
    if fport is not None:
        key = nwk_s_key if fport == 0 else app_s_key
        msg += bytes((fport,)) + crypto.crypt_frm_payload(key, addr, fcnt, uplink, payload)
    frame = msg + crypto.data_mic(nwk_s_key, addr, fcnt, uplink, msg)
    if len(frame) > MAX_PHY:
        raise ValueError(f"frame of {len(frame)} bytes exceeds {MAX_PHY}")
    return frame


def build_data_uplink(
    dev_addr: int | str,
    fcnt: int,
    fport: int | None,
    payload: bytes,
    nwk_s_key: bytes,
    app_s_key: bytes,
    confirmed: bool = False,
    fopts: bytes = b"",
    *,
    adr: bool = False,
    ack: bool = False,
) -> bytes:
    """An encrypted, signed uplink as a device would send it (for emulators and tests)."""
    mtype = MType.ConfirmedDataUp if confirmed else MType.UnconfirmedDataUp
    flags = (0x80 if adr else 0) | (0x20 if ack else 0)
    return build_data_frame(
        mtype, dev_addr, fcnt, fport, payload, nwk_s_key, app_s_key, fopts=fopts, fctrl_flags=flags
    )


def build_data_downlink(
    dev_addr: int | str,
    fcnt: int,
    fport: int | None,
    payload: bytes,
    nwk_s_key: bytes,
    app_s_key: bytes,
    confirmed: bool = False,
    fopts: bytes = b"",
    *,
    ack: bool = False,
    fpending: bool = False,
) -> bytes:
    """An encrypted, signed downlink (an ACK or MAC answer) for a PULL_RESP."""
    mtype = MType.ConfirmedDataDown if confirmed else MType.UnconfirmedDataDown
    flags = (0x20 if ack else 0) | (0x10 if fpending else 0)
    return build_data_frame(
        mtype, dev_addr, fcnt, fport, payload, nwk_s_key, app_s_key, fopts=fopts, fctrl_flags=flags
    )
