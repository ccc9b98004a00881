"""LoRaWAN through the Semtech UDP packet forwarder: pure codecs.

* :mod:`.semtech` - GWMP v2 datagrams (PUSH_DATA, PULL_DATA, TX_ACK, acks, PULL_RESP)
* :mod:`.phy` - LoRaWAN 1.0.x PHYPayload parse and build, MAC commands
* :mod:`.crypto` - MICs, FRMPayload cipher, join accept cipher, session keys
* :mod:`.fcnt` - 32-bit frame counter inference and the replay rule
* :mod:`.join` - OTAA join request / join accept
* :mod:`.cayenne` - Cayenne LPP payloads

The three ``decode_*`` functions below give JSON-ready dicts for
``cityedge decode``; each raises :class:`~cityedge.drivers.base.DecodeError`
on input that does not decode.
"""

from __future__ import annotations

from typing import Any

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import cayenne, crypto, fcnt, join, phy, semtech

__all__ = ["decode_cayenne", "decode_frame", "decode_semtech"]


def _mac_json(macs: phy.MacCommands) -> dict[str, Any]:
    return {
        "mac_commands": [{"name": m.name, "payload": m.payload.hex()} for m in macs.commands],
        "mac_unparsed": macs.unparsed,
    }


def _data_json(
    frame: phy.DataFrame, nwk_s_key: bytes | None, app_s_key: bytes | None, hint: int | None
) -> dict[str, Any]:
    fcnt32 = frame.fcnt16 if hint is None else fcnt.nearest_fcnt(frame.fcnt16, hint)
    mic_ok: bool | None = None
    if nwk_s_key is not None:
        mic_ok = crypto.verify_data_mic(
            nwk_s_key, frame.dev_addr, fcnt32, frame.uplink, frame.msg, frame.mic
        )
        if not mic_ok:
            raise DecodeError("bad_mic", f"MIC {frame.mic.hex().upper()} with FCnt {fcnt32}")
    key = nwk_s_key if frame.fport == 0 else app_s_key
    decrypted = key is not None and frame.fport is not None
    payload = frame.frm_payload
    if decrypted:
        assert key is not None
        payload = crypto.crypt_frm_payload(key, frame.dev_addr, fcnt32, frame.uplink, payload)
    out: dict[str, Any] = {
        "mtype": frame.mtype.name,
        "major": frame.major,
        "dev_addr": frame.dev_addr_hex,
        "fctrl": f"{frame.fctrl:02x}",
        "adr": frame.adr,
        "ack": frame.ack,
        ("adr_ack_req" if frame.uplink else "fpending"): (
            frame.adr_ack_req if frame.uplink else frame.fpending
        ),
        "fcnt": fcnt32,
        "fcnt16": frame.fcnt16,
        "fopts": frame.fopts.hex(),
        "fport": frame.fport,
        "frm_payload": frame.frm_payload.hex(),
        # Ciphertext is never shown as the payload: null until the key is given.
        "payload": payload.hex() if decrypted or frame.fport is None else None,
        "decrypted": decrypted,
        "mic": frame.mic.hex().upper(),
        "mic_ok": mic_ok,
    }
    if frame.uplink:
        out["class_b"] = frame.class_b
    macs = frame.mac_commands()
    if frame.fport == 0 and out["decrypted"]:
        macs = phy.parse_mac_commands(payload, frame.uplink)
    out.update(_mac_json(macs))
    return out


def _join_json(
    frame: phy.JoinRequest | phy.EncryptedJoinAccept, app_key: bytes | None
) -> dict[str, Any]:
    if isinstance(frame, phy.JoinRequest):
        ok = None if app_key is None else join.verify_join_request(frame, app_key)
        if ok is False:
            raise DecodeError("bad_mic", "join request MIC does not match the AppKey")
        return {
            "mtype": "JoinRequest",
            "join_eui": frame.join_eui,
            "dev_eui": frame.dev_eui,
            "dev_nonce": frame.dev_nonce,
            "mic": frame.mic.hex().upper(),
            "mic_ok": ok,
        }
    out: dict[str, Any] = {"mtype": "JoinAccept", "encrypted": frame.encrypted.hex()}
    if app_key is not None:
        accept = join.open_join_accept(bytes((frame.mhdr,)) + frame.encrypted, app_key)
        out.update(
            app_nonce=f"{accept.app_nonce:06X}",
            net_id=f"{accept.net_id:06X}",
            dev_addr=f"{accept.dev_addr:08X}",
            dl_settings=accept.dl_settings,
            rx_delay=accept.rx_delay,
            cflist=None if accept.cflist is None else accept.cflist.hex(),
            mic_ok=True,
        )
    return out


def decode_frame(
    phy_payload: bytes,
    nwk_s_key: bytes | None,
    app_s_key: bytes | None,
    fcnt_hint: int | None,
    *,
    app_key: bytes | None = None,
) -> dict[str, Any]:
    """Decode a LoRaWAN 1.0.x PHYPayload into JSON-ready fields.

    ``fcnt_hint`` is the approximate 32-bit counter: the frame's FCnt is taken
    as the value with its low 16 bits nearest the hint (without a hint, the 16
    bits themselves). With ``nwk_s_key`` the MIC is checked and a wrong one
    raises ``DecodeError("bad_mic")``; with ``app_s_key`` (or ``nwk_s_key`` for
    FPort 0) ``payload`` is the decrypted FRMPayload, without it ``payload`` is
    None (``frm_payload`` is the ciphertext either way). ``app_key`` checks a join
    request and opens a join accept. Keys must be 16 bytes (else ValueError).
    """
    frame = phy.parse_phy(phy_payload)
    if isinstance(frame, phy.DataFrame):
        return _data_json(frame, nwk_s_key, app_s_key, fcnt_hint)
    return _join_json(frame, app_key)


def _rxpk_json(packet: semtech.RxPacket) -> dict[str, Any]:
    out = packet.to_json()
    out["phy_payload"] = packet.data.hex()
    return out


def decode_semtech(datagram: bytes, max_size: int = semtech.MAX_DATAGRAM) -> dict[str, Any]:
    """Decode a gateway-to-server GWMP datagram into JSON-ready fields."""
    msg = semtech.parse_datagram(datagram, max_size)
    out: dict[str, Any] = {
        "version": semtech.VERSION,
        "token": msg.token,
        "identifier": semtech.Ident(datagram[3]).name,
        "gateway_eui": msg.gateway_eui,
    }
    if isinstance(msg, semtech.PushData):
        out["rxpk"] = [_rxpk_json(p) for p in msg.rxpk]
        out["stat"] = msg.stat
    elif isinstance(msg, semtech.TxAck):
        out["error"] = msg.error
    return out


def decode_cayenne(payload: bytes) -> list[dict[str, Any]]:
    """Decode a Cayenne LPP payload into JSON-ready records."""
    return [rec._asdict() for rec in cayenne.decode_lpp(payload)]
