"""The Semtech UDP packet forwarder codec (GWMP v2): framing, rxpk checks, garbage input."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import decode_frame, decode_semtech, phy, semtech

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
EUI = "AA555A0000000101"
NWK = bytes(range(16))
APP = bytes(range(16, 32))
FRAME = bytes.fromhex("40F17DBE4900020001954378762B11FF0D")


UPSTREAM_TYPES: dict[int, type] = {0: semtech.PushData, 2: semtech.PullData, 5: semtech.TxAck}


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / "semtech_udp.json").read_text())
    return doc


def _rxpk(**over: Any) -> dict[str, Any]:
    rx: dict[str, Any] = {
        "time": "2013-03-31T16:21:17.528002Z",
        "tmst": 3512348611,
        "chan": 2,
        "rfch": 0,
        "freq": 866.349812,
        "stat": 1,
        "modu": "LORA",
        "datr": "SF7BW125",
        "codr": "4/6",
        "rssi": -35,
        "lsnr": 5.1,
        "size": len(FRAME),
        "data": base64.b64encode(FRAME).decode(),
    }
    rx.update(over)
    return {k: v for k, v in rx.items() if v is not None}


def _push(body: Any, token: int = 0x1234) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return bytes((2,)) + token.to_bytes(2, "big") + b"\x00" + bytes.fromhex(EUI) + raw


def _reason(data: bytes, **kw: Any) -> str:
    with pytest.raises(DecodeError) as err:
        semtech.parse_datagram(data, **kw)
    return err.value.reason


@pytest.mark.parametrize("ident", sorted(_doc()["identifiers"]))
def test_published_identifiers(ident: str) -> None:
    """Each identifier of semtech_udp.json is framed as its description says."""
    code = int(ident, 16)
    text = _doc()["identifiers"][ident]
    token = 0xBEEF
    head = bytes((2,)) + token.to_bytes(2, "big") + bytes((code,))
    if "gw->server" in text:
        body = {"rxpk": [_rxpk()]} if code == 0 else {}
        msg = semtech.parse_datagram(head + bytes.fromhex(EUI) + json.dumps(body).encode())
        assert (msg.token, msg.gateway_eui) == (token, EUI)
        assert semtech.Ident(code).name in text
        assert isinstance(msg, UPSTREAM_TYPES[code])
    else:
        assert _reason(head + b"{}") == "unknown_identifier"
        if "4 bytes" in text:
            built = semtech.build_push_ack(token) if code == 1 else semtech.build_pull_ack(token)
            assert built == head
        down = semtech.parse_downstream(head + b'{"txpk":{}}')
        assert down.token == token


def test_push_data_full_rxpk_and_stat() -> None:
    """PUSH_DATA yields every rxpk field, the PHYPayload bytes and the stat object."""
    stat = {"time": "2014-01-12 08:59:28 GMT", "rxnb": 2, "rxok": 2, "ackr": 100.0}
    msg = semtech.parse_datagram(_push({"rxpk": [_rxpk(), _rxpk(stat=-1)], "stat": stat}))
    assert isinstance(msg, semtech.PushData)
    assert msg.token == 0x1234 and msg.gateway_eui == EUI and msg.stat == stat
    first = msg.rxpk[0]
    assert (first.tmst, first.freq, first.chan, first.rfch) == (3512348611, 866.349812, 2, 0)
    assert (first.modu, first.datr, first.codr, first.rssi, first.lsnr) == (
        "LORA",
        "SF7BW125",
        "4/6",
        -35,
        5.1,
    )
    assert first.time == "2013-03-31T16:21:17.528002Z" and first.data == FRAME
    assert first.crc_ok and not msg.rxpk[1].crc_ok
    assert decode_frame(first.data, None, None, None)["dev_addr"] == "49BE7DF1"


def test_fsk_and_minimal_rxpk() -> None:
    """FSK has a numeric datr and no codr/lsnr; time is optional without GPS."""
    msg = semtech.parse_datagram(
        _push({"rxpk": [_rxpk(modu="FSK", datr=50000, codr=None, lsnr=None, time=None)]})
    )
    assert isinstance(msg, semtech.PushData)
    assert (msg.rxpk[0].datr, msg.rxpk[0].codr, msg.rxpk[0].time) == (50000, None, None)
    assert semtech.parse_datagram(_push({})) == semtech.PushData(0x1234, EUI, (), None)


def test_round_trip_emulator_side() -> None:
    """Datagrams built for the emulator parse back; acks and PULL_RESP echo the token."""
    packet = semtech.parse_rxpk(_rxpk())
    raw = semtech.build_push_data(7, EUI, [packet], {"rxnb": 1})
    assert semtech.parse_datagram(raw) == semtech.PushData(7, EUI, (packet,), {"rxnb": 1})
    assert semtech.parse_datagram(semtech.build_pull_data(8, EUI)) == semtech.PullData(8, EUI)
    ack = semtech.parse_datagram(semtech.build_tx_ack(9, EUI, "TOO_LATE"))
    assert ack == semtech.TxAck(9, EUI, "TOO_LATE")
    assert semtech.parse_datagram(semtech.build_tx_ack(9, EUI)) == semtech.TxAck(9, EUI, None)
    assert semtech.parse_downstream(semtech.build_push_ack(7)) == semtech.Ack(
        7, semtech.Ident.PUSH_ACK
    )
    down = phy.build_data_downlink(0x01020304, 1, None, b"", NWK, APP, ack=True)
    txpk = semtech.txpk(down, freq=869.525, datr="SF9BW125", tmst=0xFFFFFFFF + 5)
    resp = semtech.parse_downstream(semtech.build_pull_resp(10, txpk))
    assert isinstance(resp, semtech.PullResp) and resp.token == 10
    assert resp.txpk["tmst"] == 4 and resp.txpk["ipol"] is True
    assert base64.b64decode(resp.txpk["data"]) == down and resp.txpk["size"] == len(down)
    assert semtech.txpk(down, freq=869.525, datr="SF9BW125")["imme"] is True


def test_decode_semtech_is_json_ready() -> None:
    """decode_semtech names the identifier and shows each PHYPayload as hex."""
    out = decode_semtech(_push({"rxpk": [_rxpk()]}))
    assert out["identifier"] == "PUSH_DATA" and out["gateway_eui"] == EUI
    assert out["rxpk"][0]["phy_payload"] == FRAME.hex() and out["rxpk"][0]["rssi"] == -35
    json.dumps(out)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x02\x00", "too_short"),
        (b"\x02\x00\x01\x00" + b"\x00" * 4, "too_short"),
        (b"\x01\x00\x01\x00" + bytes.fromhex(EUI), "bad_version"),
        (b"\x02\x00\x01\x09" + bytes.fromhex(EUI), "unknown_identifier"),
        (b"\x02\x00\x01\x01", "unknown_identifier"),
        (_push(b"{not json"), "bad_json"),
        (_push(b"[1, 2]"), "bad_json"),
        (_push(b""), "bad_json"),
        (_push(b"\xff\xfe{}"), "bad_json"),
        (_push(b'{"rxpk": [], "stat": NaN}'), "bad_json"),
        (_push(b"[" * 30_000 + b"]" * 30_000), "bad_json"),
        (_push({"stat": [1]}), "bad_stat"),
        (_push({"rxpk": {}}), "bad_rxpk"),
        (_push({"rxpk": [1]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(tmst=None)]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(tmst="1")]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(tmst=2**32)]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(stat=True)]}), "bad_rxpk"),
        (
            _push(json.dumps({"rxpk": [_rxpk(freq=-1.5)]}).replace("-1.5", "1e400").encode()),
            "bad_rxpk",
        ),
        (_push({"rxpk": [_rxpk(modu="CHIRP")]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(datr="SF99BW1")]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(lsnr=None)]}), "bad_rxpk"),
        (_push({"rxpk": [_rxpk(data=None)]}), "bad_rxpk"),
        (
            _push({"rxpk": [_rxpk(data="-DS4CGaDCdG+48eJNM3Vai-zDpsR71Pn9CPA9uCON84")]}),
            "bad_base64",
        ),
        (_push({"rxpk": [_rxpk(data="QEF=")]}), "bad_base64"),
        (_push({"rxpk": [_rxpk(data="QEE")]}), "bad_base64"),
        (_push({"rxpk": [_rxpk(data="QE\u00e9=")]}), "bad_base64"),
        (_push({"rxpk": [_rxpk(size=3)]}), "size_mismatch"),
    ],
)
def test_malformed_datagrams_have_reasons(data: bytes, reason: str) -> None:
    """Each kind of malformed datagram raises DecodeError with its own reason slug."""
    assert _reason(data) == reason


def test_oversized_datagram_and_configurable_max() -> None:
    """Datagrams over 65507 bytes, or over a configured max, are rejected first."""
    big = _push(b" " * semtech.MAX_DATAGRAM)
    assert _reason(big) == "oversized"
    assert _reason(_push({"rxpk": [_rxpk()]}), max_size=64) == "oversized"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
rxpk_like = st.fixed_dictionaries(
    {},
    optional={k: json_values | st.just(v) for k, v in _rxpk().items()},
)


@given(st.binary(max_size=200))
def test_garbage_bytes_only_decode_errors(data: bytes) -> None:
    """Arbitrary bytes into both parsers only ever raise DecodeError."""
    for parse in (semtech.parse_datagram, semtech.parse_downstream, decode_semtech):
        with contextlib.suppress(DecodeError):
            parse(data)


@given(ident=st.sampled_from([0, 2, 5]), body=st.binary(max_size=120))
def test_garbage_after_valid_header_only_decode_errors(ident: int, body: bytes) -> None:
    """A valid header followed by arbitrary bytes only ever raises DecodeError."""
    with contextlib.suppress(DecodeError):
        decode_semtech(b"\x02\x00\x01" + bytes((ident,)) + bytes.fromhex(EUI) + body)


@given(rxpk=st.lists(rxpk_like, max_size=3), stat=json_values)
def test_json_shaped_garbage_only_decode_errors(rxpk: list[Any], stat: Any) -> None:
    """rxpk objects with fields of any JSON type parse or raise DecodeError, never worse."""
    body = json.dumps({"rxpk": rxpk, "stat": stat}, allow_nan=True).encode()
    with contextlib.suppress(DecodeError):
        json.dumps(decode_semtech(_push(body)))
