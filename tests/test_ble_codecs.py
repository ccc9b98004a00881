"""BLE advertisement codecs (BTHome v2, Ruuvi RAWv2) against the public vectors."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.ble import bthome, decode_bthome, decode_ruuvi, is_replay, ruuvi

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
BLE = json.loads((VECTORS / "ble.json").read_text())
BTHOME = BLE["bthome_v2"]["vectors"]
ENCRYPTED = next(v for v in BTHOME if "bind_key" in v)
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
MAC = "A4:C1:38:00:11:22"


def plain(objects: str, info: int = 0x40) -> dict[str, Any]:
    return decode_bthome(bytes([info]) + bytes.fromhex(objects), None, None)


# --- published vectors ----------------------------------------------------------------


@pytest.mark.parametrize("vec", BTHOME, ids=lambda v: v["service_data"])
def test_bthome_vectors(vec: dict[str, Any]) -> None:
    """Every published BTHome v2 vector decodes to its published values."""
    key = bytes.fromhex(vec["bind_key"]) if "bind_key" in vec else None
    got = decode_bthome(bytes.fromhex(vec["service_data"]), vec.get("mac"), key)
    for name, value in vec["expect"].items():
        assert got[name] == value, name
    assert got["encrypted"] is (key is not None)


def test_bthome_encrypted_vector_internals() -> None:
    """The encrypted vector decrypts to the published plain objects and counter."""
    data = bytes.fromhex(ENCRYPTED["service_data"])
    objects, counter = bthome.decrypt(data, ENCRYPTED["mac"], bytes.fromhex(ENCRYPTED["bind_key"]))
    assert objects.hex() == ENCRYPTED["expect_plain_objects"]
    assert counter == ENCRYPTED["expect_counter"]
    assert (
        decode_bthome(data, ENCRYPTED["mac"], bytes.fromhex(ENCRYPTED["bind_key"]))["counter"]
        == (ENCRYPTED["expect_counter"])
    )


def test_ruuvi_vector() -> None:
    """The published RAWv2 vector decodes to every published value."""
    for vec in BLE["ruuvi_rawv2"]["vectors"]:
        got = decode_ruuvi(bytes.fromhex(vec["manufacturer_data"]))
        for name, value in vec["expect"].items():
            assert got[name] == value, name


# --- BTHome objects -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "name", "value"),
    [
        ("5AEAEA", "count", -5398),
        ("5BEA0234EA", "count", -365690134),
        ("3E2A2C0960", "count", 1611213866),
        ("4D12138A14", "energy", 344593.17),
        ("0A138A14", "energy", 1346.067),
        ("424E3400", "duration", 13.39),
        ("5D02EA", "current", -5.63),
        ("08CA06", "dewpoint", 17.38),
        ("414E00", "distance", 7.8),
        ("2E23", "humidity", 35),
        ("4C41018A01", "gas", 25821.505),
        ("58FA", "temperature", -2.1),
        ("F00100", "device_type_id", 1),
        ("F100010204", "firmware_version", "4.2.1.0"),
        ("F2000106", "firmware_version", "6.1.0"),
        ("1001", "power_on", True),
        ("2D00", "window", False),
        ("3A04", "button", "long_press"),
        ("3A80", "button", "hold_press"),
        ("53054869214121", "text", "Hi!A!"),
        ("5403C0FFEE", "raw", "c0ffee"),
        ("5000000000", "timestamp", "1970-01-01T00:00:00Z"),
    ],
)
def test_bthome_object_table(objects: str, name: str, value: object) -> None:
    """Object ids decode with their size, sign and factor (examples from bthome.io/format)."""
    assert plain(objects)[name] == value


def test_bthome_dimmer_event_and_units() -> None:
    """A dimmer event gives direction and steps; units come with the values."""
    got = plain("023409" + "3C020A")
    assert (got["dimmer"], got["dimmer_steps"]) == ("rotate_right", 10)
    assert got["units"] == {"temperature": "Cel"}


def test_bthome_repeated_objects_are_numbered() -> None:
    """Several objects of one kind are numbered in packet order; a lone one is not."""
    got = plain("02CA09" + "02C409" + "03BF13")
    assert (got["temperature_1"], got["temperature_2"], got["humidity"]) == (25.06, 25.0, 50.55)
    assert "temperature" not in got
    events = plain("3A00" + "3A01")
    assert (events["button_1"], events["button_2"]) == (None, "press")


def test_bthome_stops_at_unknown_object() -> None:
    """Parsing stops at the first unknown id, keeping the objects before it."""
    got = plain("02CA09" + "FE0102" + "03BF13")
    assert got["temperature"] == 25.06 and "humidity" not in got


def test_bthome_info_flags_and_carried_mac() -> None:
    """The trigger flag is reported; a MAC carried in the packet is read reversed."""
    assert plain("0164", info=0x44)["trigger_based"] is True
    got = plain("2211" + "0038C1A4" + "0164", info=0x42)
    assert got["mac"] == MAC and got["battery"] == 100


@pytest.mark.parametrize(
    ("data", "mac", "key", "reason"),
    [
        ("", None, None, "truncated"),
        ("2002CA09", None, None, "bad_version"),
        ("6002CA09", None, None, "bad_version"),
        ("4002CA", None, None, "truncated"),
        ("4053", None, None, "truncated"),
        ("4053FF41", None, None, "truncated"),
        ("4042", None, None, "truncated"),
        ("4053028081", None, None, "bad_object"),
        (ENCRYPTED["service_data"], ENCRYPTED["mac"], None, "no_bind_key"),
        (ENCRYPTED["service_data"], None, ENCRYPTED["bind_key"], "no_mac"),
        (ENCRYPTED["service_data"], "nonsense", ENCRYPTED["bind_key"], "bad_mac"),
        (ENCRYPTED["service_data"], ENCRYPTED["mac"], "00" * 16, "bad_mic"),
        (ENCRYPTED["service_data"], "54:48:E6:8F:80:A6", ENCRYPTED["bind_key"], "bad_mic"),
        (ENCRYPTED["service_data"], ENCRYPTED["mac"], "0011", "bad_key"),
        (ENCRYPTED["service_data"][:16], ENCRYPTED["mac"], ENCRYPTED["bind_key"], "truncated"),
        ("4002CA0903BF13", ENCRYPTED["mac"], ENCRYPTED["bind_key"], "not_encrypted"),
    ],
)
def test_bthome_rejects(data: str, mac: str | None, key: str | None, reason: str) -> None:
    """Truncation, wrong version, missing or wrong key or MAC, and downgrade are refused."""
    with pytest.raises(DecodeError) as err:
        decode_bthome(bytes.fromhex(data), mac, bytes.fromhex(key) if key else None)
    assert err.value.reason == reason


# --- encryption and replay ------------------------------------------------------------


def test_bthome_encrypt_decrypt_round_trip() -> None:
    """Objects encrypted with a test key decrypt back, with their counter."""
    objects = bytes.fromhex("0164" + "02CA09" + "03BF13")
    data = bthome.encrypt(objects, MAC, KEY, counter=7)
    assert data[0] == 0x41 and len(data) == 1 + len(objects) + 8
    assert bthome.decrypt(data, MAC, KEY) == (objects, 7)
    got = decode_bthome(data, MAC, KEY)
    assert (got["battery"], got["temperature"], got["counter"]) == (100, 25.06, 7)
    tampered = data[:2] + bytes([data[2] ^ 1]) + data[3:]
    with pytest.raises(DecodeError, match="bad_mic"):
        decode_bthome(tampered, MAC, KEY)
    trigger = bthome.encrypt(objects, MAC, KEY, counter=8, info=0x45)
    assert decode_bthome(trigger, MAC, KEY)["trigger_based"] is True
    with pytest.raises(ValueError):
        bthome.encrypt(objects, MAC, KEY, counter=-1)


def test_bthome_replayed_counter_is_detected() -> None:
    """A receiver keeping the last counter spots a replayed or older packet."""
    last: int | None = None
    accepted = []
    stream = [bthome.encrypt(b"\x01\x50", MAC, KEY, c) for c in (1, 2, 5)]
    for data in [stream[0], stream[1], stream[1], stream[2], stream[0]]:
        counter = decode_bthome(data, MAC, KEY)["counter"]
        if is_replay(counter, last):
            continue
        accepted.append(counter)
        last = counter
    assert accepted == [1, 2, 5]
    assert not is_replay(0, None)
    assert is_replay(5, 5) and is_replay(4, 5) and not is_replay(6, 5)


# --- Ruuvi ------------------------------------------------------------------------------


def test_ruuvi_not_available_sentinels() -> None:
    """Every "not available" sentinel decodes to None."""
    data = bytes.fromhex("05" + "8000" + "FFFF" + "FFFF" + "800080008000" + "FFFF" + "FF")
    data += bytes.fromhex("FFFF" + "FFFFFFFFFFFF")
    got = decode_ruuvi(data)
    for name in ("temperature", "humidity", "pressure_pa", "battery_v", "tx_power_dbm"):
        assert got[name] is None, name
    assert got["acceleration_g"] == [None, None, None]
    assert (got["movement_counter"], got["sequence"], got["mac"]) == (None, None, None)


def test_ruuvi_extremes_and_company_prefix() -> None:
    """Minimum values decode, and data still carrying the company id is accepted."""
    data = bytes.fromhex("05" + "8001" + "0000" + "0000" + "8001" + "0000" + "0000" + "0000")
    data += bytes.fromhex("00" + "0000" + "000000000001")
    got = ruuvi.parse(data)
    assert got.temperature == -163.835 and got.pressure_pa == 50000
    assert got.battery_v == 1.6 and got.tx_power_dbm == -40
    assert got.acceleration_g[0] == -32.767
    vec = BLE["ruuvi_rawv2"]["vectors"][0]
    prefixed = decode_ruuvi(bytes.fromhex("9904" + vec["manufacturer_data"]))
    assert prefixed["mac"] == vec["expect"]["mac"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [("", "truncated"), ("03" + "00" * 13, "unsupported_format"), ("05" + "00" * 10, "bad_length")],
)
def test_ruuvi_rejects(data: str, reason: str) -> None:
    """Empty data, another data format and a wrong length are refused by reason."""
    with pytest.raises(DecodeError) as err:
        decode_ruuvi(bytes.fromhex(data))
    assert err.value.reason == reason


# --- properties -----------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_ble_decoders_raise_only_decode_error(data: bytes) -> None:
    """Arbitrary bytes into every BLE decoder raise nothing but DecodeError."""
    for mac, key in ((None, None), (MAC, None), (MAC, KEY), (None, KEY), (MAC, b"short")):
        with contextlib.suppress(DecodeError):
            decode_bthome(data, mac, key)
    for call in (decode_ruuvi, bthome.parse_objects):
        with contextlib.suppress(DecodeError):
            call(data)


@given(st.binary(max_size=40), st.integers(0, 0xFFFFFFFF), st.sampled_from([0x41, 0x45]))
def test_bthome_round_trip_any_payload(objects: bytes, counter: int, info: int) -> None:
    """Any payload survives encryption; decoding it raises nothing but DecodeError."""
    data = bthome.encrypt(objects, MAC, KEY, counter, info)
    assert bthome.decrypt(data, MAC, KEY) == (objects, counter)
    with contextlib.suppress(DecodeError):
        json.dumps(decode_bthome(data, MAC, KEY))
