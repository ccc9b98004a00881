"""Serial sensor codecs and framers against the public vectors, and their properties."""

from __future__ import annotations

import contextlib
import json
import random
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityedge.config.profile_loader import CODECS
from cityedge.drivers.base import DecodeError
from cityedge.drivers.serial import (
    decode_nmea,
    decode_pms5003,
    decode_sds011,
    nmea,
    pms5003,
    sds011,
)
from cityedge.drivers.serial.codecs import (
    BUILTIN,
    NmeaCodec,
    Pms5003Codec,
    Sds011Codec,
    SensorCodec,
)
from cityedge.drivers.serial.framing import (
    Frame,
    Framer,
    Item,
    LineFramer,
    NmeaFramer,
    Pms5003Framer,
    Rejection,
    Sds011Framer,
)
from cityedge.drivers.serial.generic import (
    FrameCodec,
    LineCodec,
    SpecError,
    crc16_modbus,
    load_codec,
    sum8,
    xor8,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
SERIAL = json.loads((VECTORS / "serial_sensors.json").read_text())
GGA, RMC = SERIAL["nmea0183"]["vectors"]


def pms_frame(pm25: int, *, bad_checksum: bool = False) -> bytes:
    words = [10, pm25, 30, 11, pm25, 31, 300, 200, 100, 50, 20, 10, 0x9700]
    body = pms5003.START + (28).to_bytes(2, "big") + b"".join(w.to_bytes(2, "big") for w in words)
    total = (sum(body) + (1 if bad_checksum else 0)) & 0xFFFF
    return body + total.to_bytes(2, "big")


def sds_frame(pm25: int, *, tail: int = sds011.TAIL, bad_checksum: bool = False) -> bytes:
    data = pm25.to_bytes(2, "little") + (pm25 * 2).to_bytes(2, "little") + b"\xa1\x60"
    chk = (sum(data) + (1 if bad_checksum else 0)) & 0xFF
    return b"\xaa\xc0" + data + bytes([chk, tail])


def sentence(body: str) -> str:
    return f"${body}*{nmea.checksum(body):02X}"


def feed_in_chunks(framer: Framer, stream: bytes, seed: int) -> list[Item]:
    rng = random.Random(seed)
    out: list[Item] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 40)
        out += framer.feed(stream[pos : pos + step])
        pos += step
    return out


def frames(items: list[Item]) -> list[bytes]:
    return [i.data for i in items if isinstance(i, Frame)]


def rejections(items: list[Item], reason: str) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection) and i.reason == reason]


# --- published vectors ----------------------------------------------------------------


def test_pms5003_vector() -> None:
    """The published PMS5003 stream decodes after skipping its leading garbage."""
    vec = SERIAL["pms5003"]["vectors"][0]
    got = decode_pms5003(bytes.fromhex(vec["stream_hex"]))
    for key, value in vec["expect"].items():
        assert got[key] == value, key


def test_pms5003_vector_through_framer() -> None:
    """The framer reports the three garbage bytes of the vector, then the frame."""
    items = Pms5003Framer().feed(bytes.fromhex(SERIAL["pms5003"]["vectors"][0]["stream_hex"]))
    assert isinstance(items[0], Rejection)
    assert (items[0].reason, items[0].size) == ("garbage", 3)
    assert isinstance(items[1], Frame) and len(items[1].data) == 32
    assert len(items) == 2


def test_sds011_vector() -> None:
    """The published SDS011 frame decodes to PM2.5, PM10 and the device id."""
    vec = SERIAL["sds011"]["vectors"][0]
    got = decode_sds011(bytes.fromhex(vec["frame_hex"]))
    for key, value in vec["expect"].items():
        assert got[key] == value, key


def test_nmea_vectors_checksums() -> None:
    """Both published sentences carry the XOR checksum the rule gives."""
    for s in SERIAL["nmea0183"]["vectors"]:
        body, _, tail = s[1:].partition("*")
        assert nmea.checksum(body) == int(tail, 16)


def test_nmea_gga_vector() -> None:
    """The published GGA decodes to time, position, fix, satellites, HDOP and altitude."""
    g = nmea.parse_gga(GGA)
    assert g.time == time(12, 35, 19, tzinfo=UTC)
    assert g.lat == pytest.approx(48 + 7.038 / 60)
    assert g.lon == pytest.approx(11 + 31.0 / 60)
    assert (g.fix_quality, g.satellites, g.hdop) == (1, 8, 0.9)
    assert (g.altitude_m, g.geoid_separation_m) == (545.4, 46.9)
    assert decode_nmea(GGA)["lat"] == 48.1173


def test_nmea_rmc_vector() -> None:
    """The published RMC decodes to a UTC datetime, position, speed, course and variation."""
    r = nmea.parse_rmc(RMC)
    assert r.valid
    assert r.timestamp == datetime(1994, 3, 23, 12, 35, 19, tzinfo=UTC)
    assert (r.speed_knots, r.course_deg, r.magnetic_variation_deg) == (22.4, 84.4, -3.1)
    fix = nmea.gateway_fix(RMC)
    assert fix.valid and fix.timestamp == r.timestamp
    assert fix.lat == pytest.approx(48.1173) and fix.lon == pytest.approx(11.5166667)
    assert decode_nmea(RMC)["timestamp"] == "1994-03-23T12:35:19.000000Z"


def decoded_keys(codec: SensorCodec, frame: bytes) -> set[str]:
    """The keys the driver gets from one frame through the codec's adapter."""
    decoded = codec.decode(frame, datetime(2025, 1, 1, tzinfo=UTC))
    assert decoded is not None
    return set(decoded.values)


def test_builtin_codec_keys_are_what_the_vectors_decode_to() -> None:
    """Each codec's keys are exactly the keys its published vectors yield to the driver."""
    stream = bytes.fromhex(SERIAL["pms5003"]["vectors"][0]["stream_hex"])
    (pms,) = frames(Pms5003Framer().feed(stream))
    assert decoded_keys(Pms5003Codec(), pms) == Pms5003Codec.keys
    assert {k.partition(".")[0] for k in Pms5003Codec.keys} >= set(
        SERIAL["pms5003"]["vectors"][0]["expect"]
    )
    sds = bytes.fromhex(SERIAL["sds011"]["vectors"][0]["frame_hex"])
    assert decoded_keys(Sds011Codec(), sds) == Sds011Codec.keys
    gga, rmc = (decoded_keys(NmeaCodec(), s.encode()) for s in (GGA, RMC))
    assert gga | rmc == NmeaCodec.keys
    assert gga != rmc  # each sentence yields its own keys, both within the codec's


def test_every_serial_codec_of_a_profile_is_built_in_or_generic() -> None:
    """The profile loader's serial codecs are the built-in ones (each with keys) and generic."""
    assert set(CODECS["serial"]) == {*BUILTIN, "generic"}
    assert all(codec.keys for codec in BUILTIN.values())


# --- PMS5003 ----------------------------------------------------------------------------


def test_pms5003_commands() -> None:
    """Passive-mode commands are the documented 7-byte frames with their sums."""
    assert pms5003.cmd_passive_mode().hex() == "424de100000170"
    assert pms5003.cmd_active_mode().hex() == "424de100010171"
    assert pms5003.cmd_read().hex() == "424de200000171"
    assert pms5003.cmd_sleep().hex() == "424de400000173"
    assert pms5003.cmd_wake().hex() == "424de400010174"


def test_pms5003_ack_and_errors() -> None:
    """An 8-byte ack decodes; a wrong checksum and a short frame are refused by reason."""
    ack = bytes.fromhex("424d0004e1000174")
    assert pms5003.decode_ack(ack) == (0xE1, 0)
    assert frames(Pms5003Framer().feed(ack)) == [ack]
    with pytest.raises(DecodeError) as err:
        decode_pms5003(pms_frame(5, bad_checksum=True))
    assert err.value.reason == "bad_checksum"
    with pytest.raises(DecodeError) as err:
        decode_pms5003(pms_frame(5)[:20])
    assert err.value.reason == "truncated"
    with pytest.raises(DecodeError) as err:
        pms5003.decode_frame(ack)
    assert err.value.reason == "truncated"
    with pytest.raises(DecodeError) as err:
        decode_pms5003(ack)
    assert err.value.reason == "not_data"


# --- SDS011 -----------------------------------------------------------------------------


def test_sds011_commands() -> None:
    """Command frames are 19 bytes with the checksum of bytes 2..16 (datasheet examples)."""
    query = "aab404000000000000000000000000ffff02ab"
    assert sds011.cmd_query_data().hex() == query
    assert sds011.cmd_set_reporting_mode(query=True).hex() == "aab4020101" + "00" * 10 + "ffff02ab"
    period = sds011.cmd_set_working_period(1, device_id="60A1")
    assert period[15:17] == b"\xa1\x60" and period[17] == (8 + 1 + 1 + 0xA1 + 0x60) & 0xFF
    with pytest.raises(ValueError):
        sds011.cmd_set_working_period(31)


def test_sds011_replies() -> None:
    """C5 replies decode: reporting mode, working period, firmware date, sleep/work."""
    mode = decode_sds011(bytes.fromhex("aac5020101 00a16005ab"))
    assert (mode["command"], mode["set"], mode["value"]) == ("reporting_mode", True, "query")
    period = decode_sds011(bytes.fromhex("aac5080101 00a1600bab"))
    assert (period["command"], period["value"]) == ("working_period", 1)
    firmware = decode_sds011(bytes.fromhex("aac5070f070aa16028ab"))
    assert (firmware["command"], firmware["value"]) == ("firmware", "15-07-10")
    body = bytes([6, 1, 0, 0, 0xA1, 0x60])
    sleep = sds011.decode_frame(b"\xaa\xc5" + body + bytes([sum(body) & 0xFF, 0xAB]))
    assert isinstance(sleep, sds011.Sds011Reply) and sleep.value == "sleep"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (sds_frame(100, tail=0xAC), "bad_tail"),
        (sds_frame(100, bad_checksum=True), "bad_checksum"),
        (sds_frame(100)[:7], "truncated"),
        (b"\x01\x02\x03", "no_frame"),
    ],
)
def test_sds011_rejects(frame: bytes, reason: str) -> None:
    """Bad tail, bad checksum, a short frame and no frame at all are refused by reason."""
    with pytest.raises(DecodeError) as err:
        decode_sds011(frame)
    assert err.value.reason == reason


# --- NMEA -------------------------------------------------------------------------------


def test_nmea_any_talker_and_hemispheres() -> None:
    """GN/GL talkers parse; S and W give negative degrees; V status is not valid."""
    s = sentence("GNRMC,010203.50,V,3351.000,S,15112.000,W,0.0,,010125,,,N")
    r = nmea.parse_rmc(s)
    assert r.talker == "GN" and not r.valid
    assert r.lat == pytest.approx(-(33 + 51 / 60)) and r.lon == pytest.approx(-(151 + 12 / 60))
    assert r.timestamp == datetime(2025, 1, 1, 1, 2, 3, 500000, tzinfo=UTC)
    assert not nmea.gateway_fix(s).valid
    g = nmea.parse_gga(sentence("GLGGA,,,,,,0,00,,,M,,M,,"))
    assert (g.talker, g.fix_quality, g.lat, g.time) == ("GL", 0, None, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GGA[:-2] + "48", "bad_checksum"),
        (GGA[:-3], "bad_tail"),
        ("GPGGA,1*00", "bad_start"),
        (sentence("GPGSV,1,1,00"), "unsupported"),
        (sentence("GPRMC,123519,A,4807.038,N"), "truncated"),
        (sentence("GPRMC,123519,A,9107.038,N,01131.000,E,1,2,230394,,"), "bad_field"),
        (sentence("GPRMC,123519,X,4807.038,N,01131.000,E,1,2,230394,,"), "bad_field"),
        (sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,"), "bad_field"),
        (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,1,2,320394,,"), "bad_field"),
    ],
)
def test_nmea_rejects(text: str, reason: str) -> None:
    """Wrong checksum, missing tail, short or malformed sentences are refused by reason."""
    with pytest.raises(DecodeError) as err:
        decode_nmea(text)
    assert err.value.reason == reason


# --- framers ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pms5003_framer_torn_garbage_bad_checksums(seed: int) -> None:
    """Torn frames, garbage and bad checksums: every good frame read, every bad one counted."""
    rng = random.Random(seed)
    good: list[bytes] = []
    garbage_bytes = bad = 0
    stream = b""
    for n in range(40):
        roll = rng.random()
        if roll < 0.2:
            # Never a start pair inside, nor one formed with a neighbouring frame's bytes.
            junk = bytes(
                rng.choice([0x00, 0x42, 0xFF, 0x13, 0x4D]) for _ in range(rng.randint(1, 9))
            )
            junk = b"\x00" + junk.replace(b"\x42\x4d", b"\x42\x00") + b"\x00"
            stream += junk
            garbage_bytes += len(junk)
        elif roll < 0.35:
            stream += pms_frame(n, bad_checksum=True)
            bad += 1
        else:
            good.append(pms_frame(n))
            stream += good[-1]
    framer = Pms5003Framer()
    items = feed_in_chunks(framer, stream, seed)
    assert frames(items) == good
    assert len(rejections(items, "bad_checksum")) == bad == framer.rejected["bad_checksum"]
    assert sum(r.size for r in rejections(items, "garbage")) == garbage_bytes
    assert framer.frames == len(good) and framer.buffered == 0


def test_pms5003_framer_recovers_after_a_lost_byte() -> None:
    """A frame that lost a byte on the line does not take the next frame down with it."""
    broken = pms_frame(1)
    broken = broken[:10] + broken[11:]
    items = Pms5003Framer().feed(broken + pms_frame(2) + pms_frame(3))
    assert frames(items) == [pms_frame(2), pms_frame(3)]
    assert [i.reason for i in items if isinstance(i, Rejection)] == ["bad_checksum"]


def test_pms5003_framer_bad_length() -> None:
    """A header with an unknown length is rejected and the framer resyncs."""
    items = Pms5003Framer().feed(b"\x42\x4d\x00\x99" + pms_frame(7))
    assert [i.reason for i in items if isinstance(i, Rejection)] == ["bad_length"]
    assert frames(items) == [pms_frame(7)]


@pytest.mark.parametrize("seed", range(5))
def test_sds011_framer_torn_garbage_bad_frames(seed: int) -> None:
    """SDS011: torn frames, stray AA bytes, bad tails and checksums are each accounted for."""
    rng = random.Random(seed)
    good: list[bytes] = []
    bad = {"bad_tail": 0, "bad_checksum": 0}
    stream = b""
    for n in range(40):
        roll = rng.random()
        if roll < 0.2:
            stream += bytes([0xAA, 0x01, 0xAB, 0x00])
        elif roll < 0.3:
            stream += sds_frame(n, tail=0x00)
            bad["bad_tail"] += 1
        elif roll < 0.4:
            stream += sds_frame(n, bad_checksum=True)
            bad["bad_checksum"] += 1
        else:
            good.append(sds_frame(n))
            stream += good[-1]
    framer = Sds011Framer()
    items = feed_in_chunks(framer, stream, seed)
    assert frames(items) == good
    for reason, count in bad.items():
        assert len(rejections(items, reason)) == count, reason
    assert [sds011.decode_frame(f) for f in good][-1].device_id == "60A1"


@pytest.mark.parametrize("seed", range(5))
def test_nmea_framer_torn_garbage_bad_checksums(seed: int) -> None:
    """NMEA: sentences torn across reads, noise between them and bad checksums."""
    rng = random.Random(seed)
    good: list[bytes] = []
    bad = cut = 0
    stream = b""
    for n in range(30):
        s = sentence(f"GPGGA,1235{n % 60:02d},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
        roll = rng.random()
        if roll < 0.15:
            stream += b"\x00\xfe noise"
        elif roll < 0.3:
            stream += (s[:-1] + ("0" if s[-1] != "0" else "1")).encode() + b"\r\n"
            bad += 1
        elif roll < 0.4:
            stream += s[:20].encode()  # cut off by the next sentence
            cut += 1
        else:
            good.append(s.encode())
            stream += good[-1] + b"\r\n"
    stream += b"$"  # a started sentence stays buffered
    framer = NmeaFramer()
    items = feed_in_chunks(framer, stream, seed)
    assert frames(items) == good
    assert len(rejections(items, "bad_checksum")) == bad
    assert len(rejections(items, "bad_tail")) == cut
    assert all(decode_nmea(f.decode())["type"] == "GGA" for f in good)


def test_framers_stay_bounded_on_endless_garbage() -> None:
    """Megabytes without a frame never grow a framer's buffer past one frame."""
    cases: list[tuple[Framer, bytes]] = [
        (Pms5003Framer(), b"\x00\x42\x4d\x00\x1c" + b"\x11" * 20 + b"\x42"),
        (Sds011Framer(), b"\xaa\xc0\x01\xaa\x55"),
        (NmeaFramer(), b"$GPGGA,1,2,3,4,5,6,7,8"),
        (LineFramer(64), b"no newline here "),
    ]
    for framer, chunk in cases:
        for _ in range(20_000):
            framer.feed(chunk)
            assert framer.buffered <= framer.max_size
        assert sum(framer.rejected.values()) > 0


# --- generic codec ----------------------------------------------------------------------


def test_checksums() -> None:
    """CRC-16/MODBUS, sum8 and xor8 give their catalogue check values."""
    assert crc16_modbus(b"123456789") == 0x4B37
    assert sum8(b"123456789") == 0xDD
    assert xor8(b"123456789") == 0x31


def test_generic_line_regex_and_delimiter() -> None:
    """A regex line codec and a delimiter codec scale fields and reject what does not fit."""
    rx = load_codec(
        {
            "kind": "line",
            "regex": r"T=(?P<t>-?[0-9.]+) RH=(?P<rh>[0-9.]+)(?: ID=(?P<id>\w+))?",
            "fields": [
                {"name": "t", "unit": "Cel"},
                {"name": "rh", "unit": "%", "scale": 0.5},
                {"name": "id", "type": "str"},
            ],
        }
    )
    assert isinstance(rx, LineCodec)
    assert rx.decode(b"T=-1.5 RH=80\r") == {"t": -1.5, "rh": 40.0, "id": None}
    assert rx.units["t"] == "Cel"
    with pytest.raises(DecodeError, match="no_match"):
        rx.decode(b"hello")
    csv = load_codec(
        {"kind": "line", "delimiter": ";", "fields": [{"name": "level", "index": 2, "type": "int"}]}
    )
    assert csv.decode(b"a;b;17") == {"level": 17}
    with pytest.raises(DecodeError, match="missing_field"):
        csv.decode(b"a;b")
    with pytest.raises(DecodeError, match="bad_field"):
        csv.decode(b"a;b;x")
    with pytest.raises(DecodeError, match="bad_field"):
        csv.decode(b"a;b;" + b"9" * 400)
    with pytest.raises(DecodeError, match="bad_field"):
        rx.decode(b"T=" + b"9" * 400 + b" RH=1")
    items = csv.framer().feed(b"a;b;1\r\n\r\na;b;2\nxx")
    assert [csv.decode(f.data) for f in items if isinstance(f, Frame)] == [
        {"level": 1},
        {"level": 2},
    ]


@pytest.mark.parametrize("kind", ["sum8", "xor8", "crc16-modbus", "none"])
def test_generic_frame_codec(kind: str) -> None:
    """A fixed-frame codec checks start, checksum and tail and reads typed fields."""
    codec = load_codec(
        {
            "kind": "frame",
            "start": "AA55",
            "length": 11 if kind == "crc16-modbus" else (10 if kind != "none" else 9),
            "checksum": kind,
            "checksum_from": 2,
            "tail": "0D",
            "fields": [
                {"name": "distance", "offset": 2, "type": "u16", "scale": 0.1, "unit": "cm"},
                {"name": "temp", "offset": 4, "type": "i16", "endian": "little"},
                {"name": "flags", "offset": 6, "type": "u8"},
            ],
        }
    )
    assert isinstance(codec, FrameCodec)
    body = b"\x01\x2c" + (-5).to_bytes(2, "little", signed=True) + b"\x07\x00"
    chk = {"sum8": bytes([sum8(body)]), "xor8": bytes([xor8(body)]), "none": b""}.get(
        kind, crc16_modbus(body).to_bytes(2, "little")
    )
    frame = b"\xaa\x55" + body + chk + b"\x0d"
    assert len(frame) == codec.length
    assert codec.decode(frame) == {"distance": 30.0, "temp": -5, "flags": 7}
    if kind != "none":
        broken = frame[:-2] + bytes([frame[-2] ^ 1]) + b"\x0d"
        with pytest.raises(DecodeError, match="bad_checksum"):
            codec.decode(broken)
    items = codec.framer().feed(b"\x00\xaa" + frame + frame[:-1] + b"\x0e" + frame)
    assert frames(items) == [frame, frame]
    assert [i.reason for i in items if isinstance(i, Rejection)] == ["garbage", "bad_tail"]


def _line(**kw: Any) -> dict[str, Any]:
    return {"kind": "line", "regex": "(?P<a>x)", "fields": [{"name": "a"}]} | kw


def _frame(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "frame",
        "start": "AA",
        "length": 4,
        "fields": [{"name": "a", "offset": 1}],
    } | kw


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"kind": "serial"}, "kind"),
        (_line(fields=[]), "fields"),
        (_line(regex="("), "regex"),
        (_line(fields=[{"name": "b"}]), "fields[0].group"),
        ({"kind": "line", "fields": [{"name": "a"}]}, "regex"),
        (_line(regex="(?P<a>x)", delimiter=","), "regex"),
        ({"kind": "line", "delimiter": ",", "fields": [{"name": "a"}]}, "fields[0].index"),
        (
            {"kind": "line", "delimiter": ",", "fields": [{"name": "a", "index": -1}]},
            "fields[0].index",
        ),
        (_line(fields=[{"name": "a", "scal": 2}]), "fields[0].scal"),
        (_line(fields=[{"name": "a", "type": "u8"}]), "fields[0].type"),
        (_line(fields=[{"name": "a", "scale": "x"}]), "fields[0].scale"),
        (_line(fields=[{"name": "a", "type": "str", "scale": 2}]), "fields[0].type"),
        (_line(max_line=10**6), "max_line"),
        (_frame(start="zz"), "start"),
        (_frame(start=""), "start"),
        (_frame(fields=[{"name": "a", "offset": 3, "type": "u16"}]), "fields[0].offset"),
        (_frame(fields=[{"name": "a"}]), "fields[0].offset"),
        (_frame(checksum="md5"), "checksum"),
        (_frame(length=9999), "length"),
        (_frame(length=True), "length"),
        (_frame(checksum="sum8", checksum_from=3), "checksum_at"),
        (_frame(fields=[{"name": "a", "offset": 1}, {"name": "a", "offset": 2}]), "fields[1].name"),
        (_frame(fields=[{"name": "a b", "offset": 1}]), "fields[0].name"),
        (_frame(fields=["a"]), "fields[0]"),
    ],
)
def test_generic_spec_errors(spec: dict[str, Any], path: str) -> None:
    """Each kind of mistake in a codec spec is a SpecError naming the offending key."""
    with pytest.raises(SpecError) as err:
        load_codec(spec)
    assert isinstance(err.value, ValueError)
    assert any(p.split(":")[0] == path for p in err.value.problems), err.value.problems


def test_generic_spec_reports_every_problem() -> None:
    """A spec with several mistakes lists them all in one error."""
    with pytest.raises(SpecError) as err:
        load_codec(
            {
                "kind": "frame",
                "start": "AA",
                "length": 3,
                "colour": "red",
                "fields": [{"name": "1x", "offset": 5}],
            }
        )
    assert len(err.value.problems) >= 3
    assert "colour" in str(err.value)


# --- properties -------------------------------------------------------------------------


def _only_decode_errors(call: Any, *args: Any) -> None:
    with contextlib.suppress(DecodeError):
        call(*args)


GENERIC = [
    load_codec({"kind": "line", "regex": r"v=(?P<v>\S+)", "fields": [{"name": "v", "scale": 2.0}]}),
    load_codec(
        {"kind": "line", "delimiter": ",", "fields": [{"name": "v", "index": 1, "type": "int"}]}
    ),
    load_codec(
        {
            "kind": "frame",
            "start": "AA",
            "length": 8,
            "checksum": "crc16-modbus",
            "fields": [{"name": "v", "offset": 1, "type": "f32"}],
        }
    ),
]


@given(st.binary(max_size=200))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    """Arbitrary bytes into every serial decoder raise nothing but DecodeError."""
    for call in (decode_pms5003, decode_sds011, pms5003.decode_frame, pms5003.decode_ack):
        _only_decode_errors(call, data)
    _only_decode_errors(sds011.decode_frame, data)
    _only_decode_errors(decode_nmea, data.decode("latin-1"))
    for codec in GENERIC:
        _only_decode_errors(codec.decode, data)


@given(st.text(alphabet="$GPRMCGA,*.0123456789NSEWAV\r\n", max_size=120))
def test_nmea_text_raises_only_decode_error(text: str) -> None:
    """NMEA-looking text, valid checksum or not, raises nothing but DecodeError."""
    _only_decode_errors(decode_nmea, text)
    body = text.strip().lstrip("$").split("*")[0]
    _only_decode_errors(decode_nmea, sentence(body))


def _framers() -> list[Framer]:
    return [Pms5003Framer(), Sds011Framer(), NmeaFramer(), LineFramer(32)] + [
        c.framer() for c in GENERIC
    ]


_NOISY = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [pms_frame(3), sds_frame(4), (GGA + "\r\n").encode(), b"\x42\x4d", b"\xaa\xc0", b"$"]
        ),
    ),
    max_size=12,
)


@given(_NOISY, st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_framers_never_raise_and_ignore_chunking(parts: list[bytes], cuts: list[int]) -> None:
    """Framers never raise, stay bounded, and find the same frames however the stream is torn."""
    stream = b"".join(parts)
    for whole, torn in zip(_framers(), _framers(), strict=True):
        at_once = whole.feed(stream)
        pieces: list[Item] = []
        pos, n = 0, 0
        while pos < len(stream):
            step = cuts[n % len(cuts)]
            pieces += torn.feed(stream[pos : pos + step])
            assert torn.buffered <= torn.max_size
            pos, n = pos + step, n + 1
        assert frames(pieces) == frames(at_once)
        assert [i.reason for i in pieces if isinstance(i, Rejection) and i.reason != "garbage"] == [
            i.reason for i in at_once if isinstance(i, Rejection) and i.reason != "garbage"
        ]
