"""OPC UA pure pieces: status codes to quality, values, deadbands, writes, keys, certificates."""

from __future__ import annotations

import math
import stat
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from cityedge.drivers.base import DecodeError
from cityedge.drivers.opcua.certs import (
    UntrustedServer,
    application_uri_of,
    check_trusted,
    ensure_identity,
    load_trust,
    thumbprint,
)
from cityedge.drivers.opcua.codec import (
    WriteError,
    encode_write,
    engineering_value,
    monitoring_filter,
    parse_key,
    quality_of,
)
from cityedge.profiles import FieldMap, WriteRange
from cityedge.readings import Quality


def fm(**kw: object) -> FieldMap:
    base: dict[str, object] = {"key": "ns=2;s=X", "name": "x"}
    base.update(kw)
    return FieldMap(**base)  # type: ignore[arg-type]


def test_good_status_is_good_without_reason() -> None:
    """Good (0) maps to good quality with no reason or code."""
    info = quality_of(StatusCodes.Good)
    assert (info.quality, info.reason, info.code) == (Quality.GOOD, None, None)


def test_bad_status_carries_name_and_code() -> None:
    """A Bad code maps to bad with its symbolic name and the 32-bit code."""
    info = quality_of(StatusCodes.BadSensorFailure)
    assert info.quality is Quality.BAD
    assert info.reason == "BadSensorFailure"
    assert info.code == 0x808C0000 == StatusCodes.BadSensorFailure


def test_uncertain_status_is_uncertain() -> None:
    """Uncertain* codes map to uncertain with their name."""
    info = quality_of(StatusCodes.UncertainLastUsableValue)
    assert (info.quality, info.reason) == (Quality.UNCERTAIN, "UncertainLastUsableValue")


def test_info_bits_do_not_hide_the_name() -> None:
    """The 16 info bits (limit, overflow) are kept in the code but ignored for the name."""
    code = StatusCodes.BadOutOfRange | 0x0000_0500
    info = quality_of(code)
    assert info.reason == "BadOutOfRange"
    assert info.code == code


def test_good_with_info_bits_is_good() -> None:
    """A Good code with a limit bit set is still good."""
    assert quality_of(0x0000_0100).quality is Quality.GOOD


@given(st.integers(0, 2**32 - 1))
def test_every_status_code_maps_by_severity(code: int) -> None:
    """Any 32-bit status maps by its two severity bits and never raises."""
    info = quality_of(code)
    severity = code >> 30
    want = {0: Quality.GOOD, 1: Quality.UNCERTAIN}.get(severity, Quality.BAD)
    assert info.quality is want
    assert (info.code is None) == (want is Quality.GOOD)


def test_values_are_scaled() -> None:
    """Numbers get raw * scale + offset without binary artefacts; ints stay ints unscaled."""
    assert engineering_value(fm(scale=0.1), 2301) == 230.1
    assert engineering_value(fm(scale=2, offset=-1), 3) == 5.0
    assert engineering_value(fm(), 7) == 7
    assert isinstance(engineering_value(fm(), 7), int)


def test_float32_values_read_as_the_device_meant() -> None:
    """A Float variant is shown as its shortest float32 decimal."""
    (raw,) = struct.unpack(">f", struct.pack(">f", 230.36414))  # widened: 230.36413574...
    assert raw != 230.36414
    assert engineering_value(fm(), raw, ua.VariantType.Float) == 230.36414


def test_other_value_types() -> None:
    """Booleans and strings pass, text and dates convert, arrays and NaN are refused."""
    assert engineering_value(fm(scale=10), True) is True
    assert engineering_value(fm(), "run") == "run"
    assert engineering_value(fm(), ua.LocalizedText("auto")) == "auto"
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert engineering_value(fm(), when) == "2024-05-01T12:00:00.000000Z"
    with pytest.raises(DecodeError) as arr:
        engineering_value(fm(), [1, 2])
    assert arr.value.reason == "unsupported_type"
    with pytest.raises(DecodeError) as nan:
        engineering_value(fm(), math.nan)
    assert nan.value.reason == "invalid_value"


def test_deadband_filters() -> None:
    """deadband_type none/absolute/percent become DataChangeFilters; a bare deadband is absolute."""
    assert monitoring_filter(fm()) is None
    absolute = monitoring_filter(fm(options={"deadband": 0.5, "deadband_type": "absolute"}))
    assert absolute is not None
    assert (absolute.DeadbandType, absolute.DeadbandValue) == (ua.DeadbandType.Absolute, 0.5)
    percent = monitoring_filter(fm(options={"deadband": 2, "deadband_type": "percent"}))
    assert percent is not None and percent.DeadbandType == ua.DeadbandType.Percent
    bare = monitoring_filter(fm(options={"deadband": 1.0}))
    assert bare is not None and bare.DeadbandType == ua.DeadbandType.Absolute


def test_write_in_range_converts_to_raw_variant() -> None:
    """A value in range becomes the raw value of the field's data_type."""
    field = fm(write=WriteRange(0, 100), scale=0.1, options={"data_type": "UInt16"})
    variant = encode_write(field, 42.5)
    assert (variant.Value, variant.VariantType) == (425, ua.VariantType.UInt16)
    dbl = encode_write(fm(write=WriteRange(0, 1)), 0.25)
    assert (dbl.Value, dbl.VariantType) == (0.25, ua.VariantType.Double)
    flag = encode_write(fm(write=WriteRange(0, 1), options={"data_type": "Boolean"}), True)
    assert (flag.Value, flag.VariantType) == (True, ua.VariantType.Boolean)


def test_write_outside_range_or_read_only_is_refused() -> None:
    """Out of range, read-only, wrong type or too wide values raise a clear ValueError."""
    with pytest.raises(ValueError, match=r"outside its write range \[0, 100\]"):
        encode_write(fm(write=WriteRange(0, 100)), 100.5)
    with pytest.raises(ValueError, match="read-only"):
        encode_write(fm(), 1)
    with pytest.raises(WriteError, match="takes a number"):
        encode_write(fm(write=WriteRange(0, 1)), "1")
    with pytest.raises(WriteError, match="does not fit Int16"):
        encode_write(fm(write=WriteRange(0, 1e6), options={"data_type": "Int16"}), 40000)


def test_keys_are_node_ids_or_browse_paths() -> None:
    """Node ids parse as NodeId, anything else as a browse path from Root."""
    node = parse_key("ns=2;s=Pump1.Speed")
    assert node == ua.NodeId("Pump1.Speed", 2)
    assert parse_key("ns=2;i=1001") == ua.NodeId(1001, 2)
    path = parse_key("0:Objects/2:Pump1/2:Speed")
    assert isinstance(path, ua.RelativePath)
    assert [e.TargetName.Name for e in path.Elements] == ["Objects", "Pump1", "Speed"]
    with pytest.raises(DecodeError, match="ns=<index>"):
        parse_key("nsu=urn:x;s=a")


def test_application_certificate_made_once_with_private_key_0600(tmp_path: Path) -> None:
    """First run makes a self-signed cert with the application URI in the SAN; key mode 0600."""
    uri = "urn:test:cityedge:gw1"
    first = ensure_identity(tmp_path / "opcua", uri)
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert application_uri_of(first.cert_der) == uri
    cert = x509.load_der_x509_certificate(first.cert_der)
    assert cert.issuer == cert.subject
    again = ensure_identity(tmp_path / "opcua", "urn:other")
    assert again.cert_der == first.cert_der  # reused, not remade
    assert again.application_uri == uri


def test_trust_list_accepts_only_listed_certificates(tmp_path: Path) -> None:
    """A certificate in the trust list passes; any other raises UntrustedServer naming it."""
    a = ensure_identity(tmp_path / "a", "urn:a")
    b = ensure_identity(tmp_path / "b", "urn:b")
    trusted = load_trust([a.cert_path])
    assert check_trusted(a.cert_der, trusted, "srv") == a.cert_der
    with pytest.raises(UntrustedServer, match=thumbprint(b.cert_der)):
        check_trusted(b.cert_der, trusted, "srv")


def test_no_value_is_refused_by_name() -> None:
    """A null variant or a text without text is no_value, never a good null."""
    for raw in (None, ua.LocalizedText(None)):
        with pytest.raises(DecodeError) as empty:
            engineering_value(fm(), raw)
        assert empty.value.reason == "no_value"
    assert engineering_value(fm(), "") == ""  # an empty string is a value
