"""The Cayenne LPP decoder: published vectors, every standard type, garbage input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import cayenne, decode_cayenne

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / "cayenne_lpp.json").read_text())
    return doc


@pytest.mark.parametrize("vec", _doc()["vectors"], ids=lambda v: str(v["hex"]))
def test_published_vectors_decode(vec: dict[str, Any]) -> None:
    """Every cayenne_lpp.json payload decodes to the published records."""
    got = decode_cayenne(bytes.fromhex(vec["hex"]))
    assert [{k: r[k] for k in ("channel", "type", "value")} for r in got] == vec["expect"]
    json.dumps(got)


def test_type_table_covers_the_published_list() -> None:
    """Every type code the vectors file lists is decodable, with its published size."""
    for code, text in _doc()["types"].items():
        kind = cayenne.TYPES[int(code)]
        assert kind.name.replace("_", " ").split()[0] in text.replace("GPS", "gps")
        if "x,y,z" in text:
            assert kind.size == 6
        elif "lat,lon" in text:
            assert kind.size == 9
        else:
            assert kind.size == int(text.split(", ")[1].split(" ")[0])


@pytest.mark.parametrize(
    ("hexrec", "name", "value", "unit"),
    [
        ("0000 01", "digital_input", 1, ""),
        ("0101 00", "digital_output", 0, ""),
        ("0202 FF38", "analog_input", -2.0, ""),
        ("0303 04D2", "analog_output", 12.34, ""),
        ("0465 FFFF", "illuminance", 65535, "lx"),
        ("0566 01", "presence", 1, ""),
        ("0668 61", "humidity", 48.5, "%"),
        ("0773 2749", "barometer", 1005.7, "hPa"),
        ("0886 0064FF9C0000", "gyrometer", {"x": 1.0, "y": -1.0, "z": 0.0}, "deg/s"),
    ],
)
def test_standard_types(hexrec: str, name: str, value: Any, unit: str) -> None:
    """Each standard LPP type scales to its engineering value and unit."""
    [rec] = cayenne.decode_lpp(bytes.fromhex(hexrec.replace(" ", "")))
    assert (rec.type, rec.value, rec.unit) == (name, value, unit)


def test_gps_points_carry_their_own_units() -> None:
    """A GPS record splits into lat/lon in degrees and altitude in metres."""
    [rec] = cayenne.decode_lpp(bytes.fromhex("018806765FF2960A0003E8"))
    assert rec.points() == [
        ("gps.lat", 42.3519, "deg"),
        ("gps.lon", -87.9094, "deg"),
        ("gps.alt", 10.0, "m"),
    ]
    [temp] = cayenne.decode_lpp(bytes.fromhex("03670110"))
    assert temp.points() == [("temperature", 27.2, "Cel")]


def test_empty_payload_has_no_records() -> None:
    """An empty payload is zero records, not an error."""
    assert decode_cayenne(b"") == []


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("03", "truncated"),
        ("036701", "truncated"),
        ("03670110 0588", "truncated"),
        ("03FF0110", "unknown_type"),
        ("03670110 05C8 00", "unknown_type"),
    ],
)
def test_malformed_payloads(hexdata: str, reason: str) -> None:
    """A record cut short or of an unknown type raises DecodeError with its reason."""
    with pytest.raises(DecodeError) as err:
        decode_cayenne(bytes.fromhex(hexdata.replace(" ", "")))
    assert err.value.reason == reason


@given(st.binary(max_size=128))
def test_garbage_only_decode_errors(data: bytes) -> None:
    """Arbitrary bytes decode to JSON-ready records or raise DecodeError."""
    with contextlib.suppress(DecodeError):
        json.dumps(decode_cayenne(data))
