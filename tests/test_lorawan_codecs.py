"""The pure LoRaWAN codecs: published vectors, MIC, crypto, FCnt, OTAA, garbage input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import crypto, decode_frame, fcnt, join, phy

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")

# A published OTAA exchange (lora-packet, avbentem's runkit "deciphering a LoRaWAN
# OTAA join accept", lora-packet issue 10): AppKey, join request, join accept and
# the session keys derived from them.
APP_KEY = bytes.fromhex("B6B53F4A168A7A88BDF7EA135CE9CFCA")
JOIN_REQUEST = "00DC0000D07ED5B3701E6FEDF57CEEAF0085CC587FE913"
JOIN_ACCEPT = "204DD85AE608B87FC4889970B7D2042C9E72959B0057AED6094B16003DF12DE145"


def _lorawan_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / "lorawan.json").read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vec", _lorawan_vectors(), ids=lambda v: str(v["phy_payload"])[:12])
def test_published_vectors_decode(vec: dict[str, Any]) -> None:
    """Every lorawan.json frame decodes, MIC-checks and decrypts to the published values."""
    got = decode_frame(
        bytes.fromhex(vec["phy_payload"]),
        bytes.fromhex(vec["nwk_s_key"]),
        bytes.fromhex(vec["app_s_key"]),
        None,
    )
    want = vec["expect"]
    assert got["mtype"] == want["mtype"]
    assert got["dev_addr"] == want["dev_addr"].upper()
    assert got["fctrl"] == want["fctrl"].lower()
    assert got["fcnt"] == want["fcnt"]
    assert got["fopts"] == want["fopts"].lower()
    assert got["fport"] == want["fport"]
    assert got["payload"] == want["frm_payload_plain"].lower()
    assert got["mic"] == want["mic"].upper()
    assert got["mic_ok"] is want["mic_valid"]


@pytest.mark.parametrize("vec", _lorawan_vectors(), ids=lambda v: str(v["phy_payload"])[:12])
def test_wrong_key_gives_false_mic_not_exception(vec: dict[str, Any]) -> None:
    """A wrong NwkSKey makes the MIC check false; decode_frame then raises bad_mic."""
    frame = phy.parse_phy(bytes.fromhex(vec["phy_payload"]))
    assert isinstance(frame, phy.DataFrame)
    args = (frame.dev_addr, frame.fcnt16, frame.uplink, frame.msg, frame.mic)
    assert crypto.verify_data_mic(bytes.fromhex(vec["nwk_s_key"]), *args)
    assert not crypto.verify_data_mic(bytes(16), *args)
    with pytest.raises(DecodeError) as err:
        decode_frame(bytes.fromhex(vec["phy_payload"]), bytes(16), None, None)
    assert err.value.reason == "bad_mic"


def test_vector_mac_commands_parsed() -> None:
    """The ChirpStack vector's FOpts hold one DevStatusAns (battery 0x73, margin 7)."""
    vec = _lorawan_vectors()[1]
    got = decode_frame(bytes.fromhex(vec["phy_payload"]), None, None, None)
    assert got["mac_commands"] == [{"name": "DevStatusAns", "payload": "7307"}]
    assert got["mac_unparsed"] == 0
    assert got["mic_ok"] is None and got["decrypted"] is False


def test_without_the_key_the_payload_is_null_not_ciphertext() -> None:
    """No AppSKey: ``payload`` is null (never the ciphertext) and ``frm_payload`` the ciphertext;
    with the key it is the plaintext; a frame without FRMPayload has an empty one."""
    frame = phy.build_data_uplink(0x26011234, 7, 2, b"hello", NWK, APP)
    cipher = phy.parse_phy(frame).frm_payload.hex()  # type: ignore[union-attr]
    for keys in ((None, None), (NWK, None)):
        got = decode_frame(frame, *keys, None)
        assert (got["payload"], got["decrypted"], got["frm_payload"]) == (None, False, cipher)
    assert decode_frame(frame, NWK, APP, None)["payload"] == b"hello".hex()
    empty = decode_frame(
        phy.build_data_uplink(0x26011234, 8, None, b"", NWK, APP), None, None, None
    )
    assert (empty["payload"], empty["fport"]) == ("", None)


@pytest.mark.parametrize("bit", [0, 7, 40, 95])
def test_one_bit_flip_fails_mic(bit: int) -> None:
    """Flipping any single bit of a signed frame makes decode_frame reject it."""
    frame = bytearray(phy.build_data_uplink(0x26011234, 7, 2, b"hello", NWK, APP))
    assert decode_frame(bytes(frame), NWK, APP, None)["mic_ok"] is True
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
        decode_frame(bytes(frame), NWK, APP, None)


@given(
    dev_addr=st.integers(0, 0xFFFFFFFF),
    fcnt32=st.integers(0, 0xFFFFFFFF),
    fport=st.integers(1, 223),
    payload=st.binary(max_size=64),
    confirmed=st.booleans(),
    fopts=st.sampled_from([b"", b"\x02", b"\x06\xff\x0a", b"\x03\x07\x05\x07"]),
)
def test_build_parse_round_trip(
    dev_addr: int, fcnt32: int, fport: int, payload: bytes, confirmed: bool, fopts: bytes
) -> None:
    """A built uplink parses back to the same fields and decrypts to the same payload."""
    raw = phy.build_data_uplink(dev_addr, fcnt32, fport, payload, NWK, APP, confirmed, fopts)
    got = decode_frame(raw, NWK, APP, fcnt32)
    assert got["mtype"] == ("ConfirmedDataUp" if confirmed else "UnconfirmedDataUp")
    assert got["dev_addr"] == f"{dev_addr:08X}"
    assert (got["fcnt"], got["fcnt16"]) == (fcnt32, fcnt32 & 0xFFFF)
    assert (got["fport"], got["payload"], got["fopts"]) == (fport, payload.hex(), fopts.hex())
    assert got["mic_ok"] is True and got["mac_unparsed"] == 0


def test_port_zero_uses_nwkskey_and_parses_mac_commands() -> None:
    """An FPort 0 payload is MAC commands encrypted with the NwkSKey."""
    raw = phy.build_data_uplink("01020304", 3, 0, b"\x02\x03\x07", NWK, APP)
    got = decode_frame(raw, NWK, None, None)
    assert got["decrypted"] is True and got["payload"] == "020307"
    assert [m["name"] for m in got["mac_commands"]] == ["LinkCheckReq", "LinkADRAns"]


def test_downlink_round_trip_and_flags() -> None:
    """A downlink with ACK and FPending builds and parses with its flags."""
    raw = phy.build_data_downlink(0x01020304, 9, None, b"", NWK, APP, ack=True, fpending=True)
    frame = phy.parse_phy(raw)
    assert isinstance(frame, phy.DataFrame)
    assert (frame.mtype, frame.ack, frame.fpending, frame.fport) == (
        phy.MType.UnconfirmedDataDown,
        True,
        True,
        None,
    )
    assert decode_frame(raw, NWK, APP, None)["mic_ok"] is True


def test_mac_commands_unknown_cid_stops_with_count() -> None:
    """Parsing stops at an unknown CID and counts the bytes left."""
    macs = phy.parse_mac_commands(bytes.fromhex("02030104ff0102"), uplink=True)
    assert [m.name for m in macs.commands] == ["LinkCheckReq", "LinkADRAns", "DutyCycleAns"]
    assert macs.unparsed == 3
    down = phy.parse_mac_commands(bytes.fromhex("02050106"), uplink=False)
    assert down.commands == (phy.MacCommand("LinkCheckAns", b"\x05\x01"), ("DevStatusReq", b""))


@pytest.mark.parametrize(
    ("hexframe", "reason"),
    [
        ("", "too_short"),
        ("40F17DBE4900", "too_short"),
        ("41F17DBE4900020001954378762B11FF0D", "bad_major"),
        ("40F17DBE490F020001954378762B11FF0D", "truncated"),
        ("C0F17DBE4900020001954378762B11FF0D", "unsupported_mtype"),
        ("00DC0000D07ED5B370", "bad_length"),
        ("20" + "00" * 20, "bad_length"),
        ("40F17DBE4901020002009543787611FF0D", "bad_fopts"),
        ("40" + "00" * 300, "oversized"),
    ],
)
def test_malformed_frames_have_reasons(hexframe: str, reason: str) -> None:
    """Each kind of malformed PHYPayload raises DecodeError with its own reason."""
    with pytest.raises(DecodeError) as err:
        phy.parse_phy(bytes.fromhex(hexframe))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("fcnt16", "last", "want"),
    [
        (5, None, 5),
        (3, 2, 3),
        (0x0000, 0xFFFF, 0x10000),
        (0x0002, 0xFFFE, 0x10002),
        (0x0001, 0x1FFFF, 0x20001),
        (0xFFFF, 0x1FFF0, 0x1FFFF),
        (0x1000, 0x10FFF, 0x11000),
    ],
)
def test_fcnt_inference_around_wrap(fcnt16: int, last: int | None, want: int) -> None:
    """The 32-bit counter rolls into the next epoch when the 16 bits wrap."""
    got = fcnt.infer_fcnt(fcnt16, last)
    assert got == want
    assert not fcnt.is_replay(got, last) and not fcnt.is_gap_too_large(got, last)


@pytest.mark.parametrize(
    ("fcnt16", "last", "replay", "gap"),
    [
        (0xFFFF, 0x10000, True, False),  # an old frame from just before the wrap
        (0x0005, 0x10005, True, False),  # the same frame again
        (0x0004, 0x10005, True, False),
        (0x5000, 0x10005, False, True),  # a jump of 0x4FFB > MAX_FCNT_GAP
    ],
)
def test_fcnt_replay_and_gap(fcnt16: int, last: int, replay: bool, gap: bool) -> None:
    """Frames at or below the last counter are replays; big jumps are flagged."""
    got = fcnt.infer_fcnt(fcnt16, last)
    assert got & 0xFFFF == fcnt16
    assert fcnt.is_replay(got, last) is replay
    assert fcnt.is_gap_too_large(got, last) is gap


@given(last=st.integers(0, 0xFFFFFFFF - 0x10000), step=st.integers(1, fcnt.MAX_FCNT_GAP))
def test_fcnt_inference_recovers_any_step(last: int, step: int) -> None:
    """Any forward step within MAX_FCNT_GAP is recovered exactly from 16 bits."""
    assert fcnt.infer_fcnt((last + step) & 0xFFFF, last) == last + step


def test_nearest_fcnt_for_hints() -> None:
    """A hint picks the counter with the frame's low 16 bits nearest to it."""
    assert fcnt.nearest_fcnt(0x0010, 0x2000F) == 0x20010
    assert fcnt.nearest_fcnt(0xFFF0, 0x20005) == 0x1FFF0
    assert fcnt.nearest_fcnt(0x0001, 0) == 1


def test_published_join_request_and_accept() -> None:
    """The published join request verifies and its accept opens to the published fields."""
    req = phy.parse_phy(bytes.fromhex(JOIN_REQUEST))
    assert isinstance(req, phy.JoinRequest)
    assert (req.join_eui, req.dev_eui, req.dev_nonce) == (
        "70B3D57ED00000DC",
        "00AFEE7CF5ED6F1E",
        0xCC85,
    )
    assert join.verify_join_request(req, APP_KEY)
    assert not join.verify_join_request(req, NWK)
    accept = join.open_join_accept(bytes.fromhex(JOIN_ACCEPT), APP_KEY)
    assert (accept.app_nonce, accept.net_id, accept.dev_addr) == (0xE5063A, 0x13, 0x26012E43)
    assert (accept.dl_settings, accept.rx_delay) == (3, 1)
    assert accept.cflist == bytes.fromhex("184F84E85684B85E84886684586E8400")
    # The network side rebuilds the captured frame byte for byte.
    assert join.build_join_accept(accept, APP_KEY) == bytes.fromhex(JOIN_ACCEPT)
    keys = join.derive_session_keys(APP_KEY, accept.app_nonce, accept.net_id, req.dev_nonce)
    assert keys.nwk_s_key.hex() == "2c96f7028184bb0be8aa49275290d4fc"
    assert keys.app_s_key.hex() == "f3a5c8f0232a38c144029c165865802c"


def test_join_round_trip_with_derived_keys() -> None:
    """Device joins, network answers, both derive the same keys and an uplink verifies."""
    request = join.build_join_request("70B3D57ED0000001", "0004A30B001C0530", 0x1234, APP_KEY)
    parsed = phy.parse_phy(request)
    assert isinstance(parsed, phy.JoinRequest) and parsed.dev_eui == "0004A30B001C0530"
    grant = join.JoinAccept(app_nonce=0x010203, net_id=0x000013, dev_addr=0x26AB0001)
    accept_phy, net_keys = join.answer_join_request(parsed, APP_KEY, grant)
    seen = join.open_join_accept(accept_phy, APP_KEY)
    assert seen == grant and len(accept_phy) == 17
    dev_keys = join.derive_session_keys(APP_KEY, seen.app_nonce, seen.net_id, 0x1234)
    assert dev_keys == net_keys and dev_keys.nwk_s_key != dev_keys.app_s_key
    uplink = phy.build_data_uplink(seen.dev_addr, 0, 1, b"\x01", *dev_keys)
    got = decode_frame(uplink, *net_keys, None)
    assert (got["mic_ok"], got["payload"], got["dev_addr"]) == (True, "01", "26AB0001")


def test_join_with_wrong_key_is_rejected() -> None:
    """A join request signed with another key is refused; a tampered accept fails to open."""
    request = join.build_join_request("0000000000000001", "0000000000000002", 1, NWK)
    parsed = phy.parse_phy(request)
    assert isinstance(parsed, phy.JoinRequest)
    with pytest.raises(DecodeError) as err:
        join.answer_join_request(parsed, APP_KEY, join.JoinAccept(1, 2, 3))
    assert err.value.reason == "bad_mic"
    with pytest.raises(DecodeError) as err:
        join.open_join_accept(bytes.fromhex(JOIN_ACCEPT), NWK)
    assert err.value.reason == "bad_mic"


def test_decode_frame_join_messages() -> None:
    """decode_frame shows join requests and, given the AppKey, opens join accepts."""
    req = decode_frame(bytes.fromhex(JOIN_REQUEST), None, None, None, app_key=APP_KEY)
    assert (req["mtype"], req["dev_nonce"], req["mic_ok"]) == ("JoinRequest", 0xCC85, True)
    acc = decode_frame(bytes.fromhex(JOIN_ACCEPT), None, None, None, app_key=APP_KEY)
    assert (acc["dev_addr"], acc["net_id"], acc["app_nonce"]) == ("26012E43", "000013", "E5063A")
    sealed = decode_frame(bytes.fromhex(JOIN_ACCEPT), None, None, None)
    assert sealed["mtype"] == "JoinAccept" and "dev_addr" not in sealed
    with pytest.raises(DecodeError):
        decode_frame(bytes.fromhex(JOIN_REQUEST), None, None, None, app_key=NWK)


def test_keys_of_wrong_length_are_value_errors() -> None:
    """A malformed key is a configuration error (ValueError), not a decode failure."""
    with pytest.raises(ValueError, match="16 bytes"):
        crypto.aes_cmac(b"short", b"")


@given(st.binary(max_size=300))
def test_parse_phy_garbage_only_decode_errors(data: bytes) -> None:
    """Arbitrary bytes into parse_phy either parse or raise DecodeError."""
    with contextlib.suppress(DecodeError):
        phy.parse_phy(data)


@given(
    head=st.sampled_from([0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xE0]),
    body=st.binary(max_size=64),
    keys=st.booleans(),
    hint=st.none() | st.integers(-10, 2**33),
)
def test_decode_frame_garbage_only_decode_errors(
    head: int, body: bytes, keys: bool, hint: int | None
) -> None:
    """Arbitrary frames with or without keys only ever raise DecodeError."""
    key = NWK if keys else None
    try:
        out = decode_frame(bytes((head,)) + body, key, key, hint, app_key=key)
    except DecodeError:
        return
    json.dumps(out)


def test_the_config_checker_knows_exactly_the_payload_codecs() -> None:
    """profile_loader's list (config never imports drivers at load) equals the drivers' own."""
    from cityedge.config.profile_loader import CODECS
    from cityedge.drivers.lorawan.payload import CODECS as PAYLOAD_CODECS

    assert set(CODECS["lorawan"]) == set(PAYLOAD_CODECS)
