"""Semtech UDP packet forwarder protocol (GWMP v2), as in Lora-net PROTOCOL.TXT.

Header: ``version(1)=2 | token(2) | identifier(1)``. The gateway sends
PUSH_DATA (EUI + JSON ``{rxpk, stat}``), PULL_DATA (EUI, keep-alive) and
TX_ACK (EUI + optional JSON); the server answers PUSH_ACK, PULL_ACK and
sends downlinks in PULL_RESP (JSON ``{txpk}``).

The protocol has no authentication, so every datagram is untrusted: the
parsers raise :class:`~cityedge.drivers.base.DecodeError` with one of the
reasons ``oversized``, ``too_short``, ``bad_version``, ``unknown_identifier``,
``bad_json``, ``bad_stat``, ``bad_rxpk``, ``bad_base64``, ``size_mismatch``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from cityedge.drivers.base import DecodeError

VERSION = 2
MAX_DATAGRAM = 65507
"""The largest UDP payload over IPv4."""


class Ident(enum.IntEnum):
    PUSH_DATA = 0x00
    PUSH_ACK = 0x01
    PULL_DATA = 0x02
    PULL_RESP = 0x03
    PULL_ACK = 0x04
    TX_ACK = 0x05


UPSTREAM = (Ident.PUSH_DATA, Ident.PULL_DATA, Ident.TX_ACK)
_LORA_DATR = re.compile(r"SF(?:[5-9]|1[0-2])BW[0-9]{2,4}")


@dataclass(frozen=True, slots=True)
class RxPacket:
    """One received LoRa (or FSK) frame with its radio metadata."""

    tmst: int
    freq: float
    chan: int
    rfch: int
    stat: int
    modu: str
    datr: str | int
    rssi: int
    size: int
    data: bytes
    codr: str | None = None
    lsnr: float | None = None
    time: str | None = None
    tmms: int | None = None

    @property
    def crc_ok(self) -> bool:
        return self.stat == 1

    def to_json(self) -> dict[str, Any]:
        """The rxpk object, as a packet forwarder (or an emulator) sends it."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("time", "tmms", "tmst", "freq", "chan", "rfch", "stat", "modu")
            if getattr(self, name) is not None
        }
        out["datr"] = self.datr
        if self.codr is not None:
            out["codr"] = self.codr
        out["rssi"] = self.rssi
        if self.lsnr is not None:
            out["lsnr"] = self.lsnr
        out["size"] = self.size
        out["data"] = base64.b64encode(self.data).decode("ascii")
        return out


@dataclass(frozen=True, slots=True)
class PushData:
    token: int
    gateway_eui: str
    rxpk: tuple[RxPacket, ...]
    stat: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PullData:
    token: int
    gateway_eui: str


@dataclass(frozen=True, slots=True)
class TxAck:
    """A downlink's fate; ``error`` is None or "NONE" when it was sent."""

    token: int
    gateway_eui: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Ack:
    """PUSH_ACK or PULL_ACK (server to gateway)."""

    token: int
    ident: Ident


@dataclass(frozen=True, slots=True)
class PullResp:
    token: int
    txpk: dict[str, Any]


Upstream = PushData | PullData | TxAck
Downstream = Ack | PullResp


def _header(data: bytes, max_size: int) -> tuple[int, int]:
    """Check size and version; return (token, identifier byte)."""
    if len(data) > max_size:
        raise DecodeError("oversized", f"{len(data)} bytes > {max_size}")
    if len(data) < 4:
        raise DecodeError("too_short", f"{len(data)} bytes, header needs 4")
    if data[0] != VERSION:
        raise DecodeError("bad_version", f"protocol version {data[0]}, expected {VERSION}")
    return int.from_bytes(data[1:3], "big"), data[3]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.rstrip(b"\x00"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError("bad_json", str(exc)[:80]) from None
    if not isinstance(obj, dict):
        raise DecodeError("bad_json", "top level is not an object")
    return obj


def parse_datagram(data: bytes, max_size: int = MAX_DATAGRAM) -> Upstream:
    """Parse a datagram from a gateway: PUSH_DATA, PULL_DATA or TX_ACK."""
    token, ident = _header(data, max_size)
    if ident not in UPSTREAM:
        raise DecodeError("unknown_identifier", f"0x{ident:02X} is not gateway-to-server")
    if len(data) < 12:
        raise DecodeError("too_short", f"{Ident(ident).name} needs a gateway EUI")
    eui = data[4:12].hex().upper()
    if ident == Ident.PULL_DATA:
        return PullData(token, eui)
    if ident == Ident.TX_ACK:
        return TxAck(token, eui, _tx_ack_error(data[12:]))
    obj = _json_object(data[12:])
    return PushData(token, eui, _rxpk_list(obj.get("rxpk", [])), _stat(obj.get("stat")))


def _tx_ack_error(body: bytes) -> str | None:
    if not body.rstrip(b"\x00"):
        return None
    ack = _json_object(body).get("txpk_ack", {})
    error = ack.get("error") if isinstance(ack, dict) else None
    if error is not None and not isinstance(error, str):
        raise DecodeError("bad_json", "txpk_ack.error is not a string")
    return error


def _stat(stat: Any) -> dict[str, Any] | None:
    if stat is not None and not isinstance(stat, dict):
        raise DecodeError("bad_stat", "stat is not an object")
    return stat


def _rxpk_list(items: Any) -> tuple[RxPacket, ...]:
    if not isinstance(items, list):
        raise DecodeError("bad_rxpk", "rxpk is not a list")
    return tuple(parse_rxpk(item) for item in items)


def _field(obj: dict[str, Any], name: str, kinds: tuple[type, ...], required: bool = True) -> Any:
    value = obj.get(name)
    if value is None and not required:
        return None
    # bool is an int to Python, never to the protocol.
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DecodeError(
            "bad_rxpk", f"{name} missing or not {'/'.join(k.__name__ for k in kinds)}"
        )
    return value


def _int_in(obj: dict[str, Any], name: str, low: int, high: int) -> int:
    value: int = _field(obj, name, (int,))
    if not low <= value <= high:
        raise DecodeError("bad_rxpk", f"{name} out of range: {value}")
    return value


def _strict_b64(text: str) -> bytes:
    """Decode canonical, padded standard base64 only."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise DecodeError("bad_base64", "data is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise DecodeError("bad_base64", "data is not canonical base64")
    return raw


def parse_rxpk(obj: Any) -> RxPacket:
    """Validate one rxpk object; its ``data`` must be strict base64 of ``size`` bytes."""
    if not isinstance(obj, dict):
        raise DecodeError("bad_rxpk", "rxpk entry is not an object")
    modu = _field(obj, "modu", (str,))
    if modu not in ("LORA", "FSK"):
        raise DecodeError("bad_rxpk", f"unknown modulation {modu[:16]!r}")
    lora = modu == "LORA"
    datr = _field(obj, "datr", (str,) if lora else (int,))
    if lora and not _LORA_DATR.fullmatch(datr):
        raise DecodeError("bad_rxpk", f"bad LoRa datr {datr[:16]!r}")
    codr = _field(obj, "codr", (str,), required=lora)
    packet = RxPacket(
        tmst=_int_in(obj, "tmst", 0, 0xFFFFFFFF),
        freq=_number(obj, "freq"),
        chan=_int_in(obj, "chan", 0, 255),
        rfch=_int_in(obj, "rfch", 0, 255),
        stat=_int_in(obj, "stat", -1, 1),
        modu=modu,
        datr=datr,
        codr=codr,
        rssi=_int_in(obj, "rssi", -300, 100),
        lsnr=_opt_number(obj, "lsnr", required=lora),
        size=_int_in(obj, "size", 0, 255),
        data=_strict_b64(_field(obj, "data", (str,))),
        time=_field(obj, "time", (str,), required=False),
        tmms=_int_in(obj, "tmms", 0, 2**63 - 1) if obj.get("tmms") is not None else None,
    )
    if len(packet.data) != packet.size:
        raise DecodeError("size_mismatch", f"size {packet.size}, data has {len(packet.data)}")
    return packet


def _number(obj: dict[str, Any], name: str) -> float:
    """A required finite number, as float."""
    number = _opt_number(obj, name, required=True)
    if number is None:  # unreachable: _field raises first
        raise DecodeError("bad_rxpk", f"{name} missing")
    return number


def _opt_number(obj: dict[str, Any], name: str, required: bool) -> float | None:
    """A finite number as float; None when absent and not required."""
    value = _field(obj, name, (int, float), required)
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a double
        number = math.inf
    if not math.isfinite(number):
        raise DecodeError("bad_rxpk", f"{name} is not finite")
    return number


def parse_downstream(data: bytes, max_size: int = MAX_DATAGRAM) -> Downstream:
    """Parse a datagram from the server (the gateway's side, for emulators)."""
    token, ident = _header(data, max_size)
    if ident in (Ident.PUSH_ACK, Ident.PULL_ACK):
        return Ack(token, Ident(ident))
    if ident != Ident.PULL_RESP:
        raise DecodeError("unknown_identifier", f"0x{ident:02X} is not server-to-gateway")
    txpk = _json_object(data[4:]).get("txpk")
    if not isinstance(txpk, dict):
        raise DecodeError("bad_json", "PULL_RESP without a txpk object")
    return PullResp(token, txpk)


def _head(token: int, ident: Ident) -> bytes:
    return bytes((VERSION,)) + (token & 0xFFFF).to_bytes(2, "big") + bytes((ident,))


def build_push_ack(token: int) -> bytes:
    return _head(token, Ident.PUSH_ACK)


def build_pull_ack(token: int) -> bytes:
    return _head(token, Ident.PULL_ACK)


def build_pull_resp(token: int, txpk: dict[str, Any]) -> bytes:
    """A PULL_RESP carrying one ``txpk`` (see :func:`txpk`)."""
    return _head(token, Ident.PULL_RESP) + json.dumps({"txpk": txpk}).encode()


def txpk(
    phy_payload: bytes,
    *,
    freq: float,
    datr: str,
    tmst: int | None = None,
    powe: int = 14,
    codr: str = "4/5",
    rfch: int = 0,
) -> dict[str, Any]:
    """A LoRa txpk: sent at concentrator time ``tmst``, or at once when None.

    ``ipol`` is true because downlinks use inverted polarity.
    """
    out: dict[str, Any] = {"imme": True} if tmst is None else {"tmst": tmst & 0xFFFFFFFF}
    out.update(
        freq=freq,
        rfch=rfch,
        powe=powe,
        modu="LORA",
        datr=datr,
        codr=codr,
        ipol=True,
        size=len(phy_payload),
        data=base64.b64encode(phy_payload).decode("ascii"),
    )
    return out


def _eui_bytes(gateway_eui: str) -> bytes:
    raw = bytes.fromhex(gateway_eui)
    if len(raw) != 8:
        raise ValueError(f"gateway EUI must be 8 bytes: {gateway_eui!r}")
    return raw


def build_push_data(
    token: int,
    gateway_eui: str,
    rxpk: list[RxPacket],
    stat: dict[str, Any] | None = None,
) -> bytes:
    """A PUSH_DATA datagram, as a packet forwarder sends it (for emulators and tests)."""
    body: dict[str, Any] = {"rxpk": [p.to_json() for p in rxpk]}
    if stat is not None:
        body["stat"] = stat
    return _head(token, Ident.PUSH_DATA) + _eui_bytes(gateway_eui) + json.dumps(body).encode()


def build_pull_data(token: int, gateway_eui: str) -> bytes:
    return _head(token, Ident.PULL_DATA) + _eui_bytes(gateway_eui)


def build_tx_ack(token: int, gateway_eui: str, error: str | None = None) -> bytes:
    body = b"" if error is None else json.dumps({"txpk_ack": {"error": error}}).encode()
    return _head(token, Ident.TX_ACK) + _eui_bytes(gateway_eui) + body
