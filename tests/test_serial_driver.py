"""The serial sensor source through a real pty: vectors, torn frames, modes, silence, unplug."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cityedge.drivers.serial import nmea, pms5003, sds011
from cityedge.drivers.serial.driver import SerialSensorSource, build_source
from cityedge.drivers.serial.framing import Frame, LineFramer, Rejection
from cityedge.drivers.serial.transport import LineSettings, SerialTransport
from cityedge.errors import ConfigError, TransientError
from cityedge.readings import Quality
from tests.peers.serialpeer import (
    CTX,
    Collector,
    SensorPort,
    make_source,
    running,
    sensor,
    sensor_port,
    wait_until,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
SERIAL = json.loads((VECTORS / "serial_sensors.json").read_text())
GGA, RMC = SERIAL["nmea0183"]["vectors"]


def pms_frame(pm25: int, *, bad_checksum: bool = False) -> bytes:
    words = [10, pm25, 30, 11, pm25, 31, 300, 200, 100, 50, 20, 10, 0]
    body = pms5003.START + (28).to_bytes(2, "big") + b"".join(w.to_bytes(2, "big") for w in words)
    total = (sum(body) + (1 if bad_checksum else 0)) & 0xFFFF
    return body + total.to_bytes(2, "big")


def sds_frame(pm25: int, *, bad_checksum: bool = False) -> bytes:
    data = pm25.to_bytes(2, "little") + (pm25 * 2).to_bytes(2, "little") + b"\xa1\x60"
    chk = (sum(data) + (1 if bad_checksum else 0)) & 0xFF
    return b"\xaa\xc0" + data + bytes([chk, sds011.TAIL])


def sentence(body: str, *, bad_checksum: bool = False) -> bytes:
    chk = nmea.checksum(body) ^ (1 if bad_checksum else 0)
    return f"${body}*{chk:02X}\r\n".encode()


def gga(lat_minutes: int) -> bytes:
    return sentence(f"GPGGA,123519,48{lat_minutes:02d}.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[SensorPort]:
    async with sensor_port(tmp_path) as p:
        yield p


async def write_torn(port: SensorPort, stream: bytes, seed: int) -> None:
    """Write ``stream`` in random pieces with pauses, as a UART delivers it."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 23)
        port.write(stream[pos : pos + step])
        pos += step
        await asyncio.sleep(rng.choice((0, 0, 0.002)))


def device_status(source: SerialSensorSource) -> dict[str, object]:
    devices = source.status()["devices"]
    assert isinstance(devices, dict)
    info = devices[source.device.id]
    assert isinstance(info, dict)
    return info


# -- published vectors, through the driver ----------------------------------


async def test_pms5003_vector_decodes_through_the_driver(port: SensorPort) -> None:
    """The published PMS5003 stream (with leading garbage) yields the published values."""
    vector = SERIAL["pms5003"]["vectors"][0]
    expect = vector["expect"]
    source, sink = make_source(*sensor(port, "plantower/pms5003")), Collector()
    async with running(source, sink):
        port.write(bytes.fromhex(vector["stream_hex"]))
        await sink.wait_for(lambda: len(sink.values("particles_10um")) == 1)
    got = {r.point: r.value for r in sink.readings}
    assert got["pm1_0"] == expect["pm1_0_atm"]
    assert got["pm2_5"] == expect["pm2_5_atm"]
    assert got["pm10"] == expect["pm10_atm"]
    assert got["pm2_5_cf1"] == expect["pm2_5_cf1"]
    names = ["0_3", "0_5", "1_0", "2_5", "5_0", "10"]
    assert [got[f"particles_{n}um"] for n in names] == expect["counts"]
    reading = sink.points("pm2_5")[0]
    assert (reading.unit, reading.family, reading.device) == ("ug/m3", "environment", "s1")
    assert reading.cell == CTX.cell_for(source.device) and reading.ts.tzinfo is UTC
    assert source.status()["rejected"] == {"garbage": 1}
    assert device_status(source)["unmapped"] == 1  # the reserved word is not in the profile


async def test_sds011_vector_decodes_through_the_driver(port: SensorPort) -> None:
    """The published SDS011 frame yields PM2.5 123.6 and PM10 261.8 from sensor 60A1."""
    vector = SERIAL["sds011"]["vectors"][0]
    source, sink = make_source(*sensor(port, "nova/sds011")), Collector()
    async with running(source, sink):
        port.write(bytes.fromhex(vector["frame_hex"]))
        await sink.wait_for(lambda: len(sink.readings) == 2)
    got = {r.point: r.value for r in sink.readings}
    assert got == {"pm2_5": vector["expect"]["pm2_5"], "pm10": vector["expect"]["pm10"]}
    assert sink.readings[0].meta == {"sensor_id": vector["expect"]["device_id"]}


async def test_nmea_vectors_decode_and_give_the_gateway_fix(port: SensorPort) -> None:
    """The published GGA and RMC yield position, fix, altitude, speed and the latest fix."""
    source, sink = make_source(*sensor(port, "u-blox/neo-6m")), Collector()
    assert source.latest_fix() is None
    async with running(source, sink):
        port.write(f"{GGA}\r\n{RMC}\r\n".encode())
        await sink.wait_for(lambda: bool(sink.points("fix_valid")))
    values: dict[str, list[object]] = {}
    for r in sink.readings:
        values.setdefault(r.point, []).append(r.value)
    assert values["latitude"] == [pytest.approx(48.1173)] * 2  # 48 deg 07.038 min, GGA and RMC
    assert values["longitude"] == [pytest.approx(11 + 31 / 60)] * 2
    assert values["fix_quality"] == [1] and values["satellites"] == [8]
    assert values["hdop"] == [0.9] and values["altitude"] == [545.4]
    assert values["speed"] == [pytest.approx(22.4 * 1852 / 3600)]
    assert values["course"] == [84.4] and values["fix_valid"] == [True]
    assert sink.points("altitude")[0].meta == {"sentence": "GGA", "talker": "GP"}
    fix = source.latest_fix()
    assert fix is not None
    assert fix.time == datetime(1994, 3, 23, 12, 35, 19, tzinfo=UTC)
    assert (fix.lat, fix.lon) == (pytest.approx(48.1173), pytest.approx(11 + 31 / 60))
    status_fix = source.status()["fix"]
    assert isinstance(status_fix, dict) and status_fix["time"] == "1994-03-23T12:35:19.000000Z"


async def test_gps_without_fix_reports_bad_position(port: SensorPort) -> None:
    """A NEO-6M's no-fix sentences make position bad (no_fix) and leave no gateway fix."""
    source, sink = make_source(*sensor(port, "u-blox/neo-6m")), Collector()
    async with running(source, sink):
        # What a NEO-6M sends before its first fix, TXT and GSV included.
        port.write(b"$GPTXT,01,01,02,u-blox ag - www.u-blox.com*50\r\n$GPRMC,,V,,,,,,,,,,N*53\r\n")
        port.write(b"$GPGGA,,,,,,0,00,99.99,,,,,,*48\r\n$GPGSV,1,1,00*79\r\n")
        await sink.wait_for(lambda: bool(sink.points("fix_quality")))
    assert {r.reason for r in sink.points("latitude")} == {"no_fix"}
    assert all(r.quality == Quality.BAD for r in sink.points("longitude"))
    assert sink.values("fix_quality") == [0] and sink.values("fix_valid") == [False]
    assert source.latest_fix() is None
    assert device_status(source)["ignored"] == 2 and source.status()["rejected"] == {}


# -- torn frames, garbage, bad checksums --------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_pms5003_stream_with_faults(port: SensorPort, seed: int) -> None:
    """Every good PMS5003 frame in a torn stream is read; every bad one is counted."""
    rng = random.Random(seed)
    stream, good, bad = b"", [], 0
    for pm25 in range(10, 40):
        kind = rng.choice(("good", "good", "bad", "garbage", "torn"))
        if kind == "bad":
            stream += pms_frame(pm25, bad_checksum=True)
            bad += 1
            continue
        if kind == "garbage":
            stream += bytes([0x00, 0x13, 0x37, 0xFF])
        elif kind == "torn":  # a frame cut short: the framer sees a bad checksum
            stream += pms_frame(999)[:13]
            bad += 1
        stream += pms_frame(pm25)
        good.append(pm25)
    source, sink = make_source(*sensor(port, "plantower/pms5003")), Collector()
    async with running(source, sink):
        await write_torn(port, stream, seed)
        await sink.wait_for(lambda: len(sink.values("pm2_5")) == len(good))
        await asyncio.sleep(0.05)  # nothing more comes
    assert sink.values("pm2_5") == good
    rejected = source.status()["rejected"]
    assert isinstance(rejected, dict)
    assert rejected.get("bad_checksum", 0) == bad
    assert device_status(source)["frames"] == len(good)


async def test_sds011_stream_with_faults(port: SensorPort) -> None:
    """Every good SDS011 frame survives garbage and bad checksums; replies are not data."""
    reply = b"\xaa\xc5\x02\x01\x01\x00\xa1\x60\x05\xab"  # "query mode set" from sensor 60A1
    stream = sds_frame(100) + b"\xaa\xaa\x01" + sds_frame(101, bad_checksum=True)
    stream += reply + sds_frame(102)[:6] + sds_frame(103) + b"\xff" * 7 + sds_frame(104)
    source, sink = make_source(*sensor(port, "nova/sds011")), Collector()
    async with running(source, sink):
        await write_torn(port, stream, 7)
        await sink.wait_for(lambda: len(sink.values("pm2_5")) == 3)
    assert sink.values("pm2_5") == [10.0, 10.3, 10.4]
    rejected = source.status()["rejected"]
    assert isinstance(rejected, dict) and rejected["bad_checksum"] == 1
    assert rejected["garbage"] >= 2
    assert device_status(source)["ignored"] == 1


async def test_nmea_stream_with_faults(port: SensorPort) -> None:
    """Good sentences survive bad checksums, cut lines, noise and unsupported sentences."""
    stream = gga(1) + sentence(
        "GPGGA,123519,4802.000,N,01131.000,E,1,08,0.9,5.4,M,,M,,", bad_checksum=True
    )
    stream += b"$GPGGA,1235" + b"\x00\xfe noise " + gga(3) + b"$GPGSV,1,1,00*79\r\n"
    stream += sentence("GPGGA,123519,4899.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    stream += gga(5)
    source, sink = make_source(*sensor(port, "u-blox/neo-6m")), Collector()
    async with running(source, sink):
        await write_torn(port, stream, 3)
        await sink.wait_for(lambda: len(sink.values("latitude")) == 3)
    assert sink.values("latitude") == [pytest.approx(48 + m / 60) for m in (1, 3, 5)]
    assert source.status()["rejected"] == {"bad_checksum": 1, "bad_tail": 1, "bad_field": 1}
    assert device_status(source)["ignored"] == 1


async def test_random_bytes_never_stop_the_source(port: SensorPort) -> None:
    """Random bytes on the line become counted rejections; the next good frame is read."""
    noise = random.Random(5).randbytes(3000)
    source, sink = make_source(*sensor(port, "plantower/pms5003")), Collector()
    async with running(source, sink) as task:
        await write_torn(port, noise, 5)
        port.write(pms_frame(77))
        await sink.wait_for(lambda: 77 in sink.values("pm2_5"))
        assert not task.done()
    rejected = source.status()["rejected"]
    assert isinstance(rejected, dict) and sum(rejected.values()) >= 1


# -- passive mode --------------------------------------------------------------


async def test_pms5003_passive_mode_sends_mode_and_read_commands(port: SensorPort) -> None:
    """Passive mode sends 42 4D E1 00 00 at open, then 42 4D E2 every poll interval."""
    bus, dev = sensor(port, "plantower/pms5003", mode="passive", poll_interval_s=0.1)
    source, sink = make_source(bus, dev), Collector()
    async with running(source, sink):
        # The data manual's bytes: change mode to passive, then read.
        sent = await port.expect(bytes.fromhex("424de100000170 424de200000171"))
        assert sent.startswith(bytes.fromhex("424de100000170"))
        await port.expect(bytes.fromhex("424de200000171") * 2)  # it keeps asking
        port.write(bytes.fromhex("424d0004e1000174") + pms_frame(42))  # mode ack, then data
        await sink.wait_for(lambda: sink.values("pm2_5") == [42])
    assert device_status(source)["commands"] >= 3
    assert device_status(source)["sensor_mode"] == "passive"


async def test_sds011_query_mode_sends_mode_and_query_commands(port: SensorPort) -> None:
    """Query mode sets reporting mode 'query' at open, then sends query-data commands."""
    bus, dev = sensor(port, "nova/sds011", mode="passive", poll_interval_s=0.1)
    source, sink = make_source(bus, dev), Collector()
    async with running(source, sink):
        # Published bytes of both commands (sensor id FFFF: any sensor).
        mode = bytes.fromhex("aa b4 02 01 01 00 00 00 00 00 00 00 00 00 00 ff ff 02 ab")
        query = bytes.fromhex("aa b4 04 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 02 ab")
        await port.expect(mode + query)
        port.write(sds_frame(55))
        await sink.wait_for(lambda: sink.values("pm2_5") == [5.5])


async def test_explicit_active_mode_is_set_at_open(port: SensorPort) -> None:
    """sensor_mode = active sends the active-mode command once and no read commands."""
    bus, dev = sensor(port, "plantower/pms5003", mode="active", poll_interval_s=0.05)
    source, sink = make_source(bus, dev), Collector()
    async with running(source, sink):
        await port.expect(pms5003.cmd_active_mode())
        await asyncio.sleep(0.2)
        assert pms5003.cmd_read() not in port.received()


# -- silence and unplugging ------------------------------------------------------


async def test_silent_sensor_turns_bad_once_and_recovers(port: SensorPort) -> None:
    """No frame for silence_s makes every point bad (silent) once; frames make them good."""
    source, sink = make_source(*sensor(port, "nova/sds011", silence_s=0.3)), Collector()
    async with running(source, sink):
        port.write(sds_frame(10))
        await sink.wait_for(lambda: bool(sink.points("pm10", Quality.BAD)))
        assert source.state == "silent"
        await asyncio.sleep(0.8)  # still silent: no second round of bad readings
        assert [r.reason for r in sink.points("pm2_5", Quality.BAD)] == ["silent"]
        port.write(sds_frame(20))
        await sink.wait_for(lambda: sink.values("pm2_5") == [1.0, 2.0])
        assert source.state == "ok"
    assert [r.quality for r in sink.points("pm2_5")] == ["good", "bad", "good"]
    assert device_status(source)["errors"] == {"silent": 1}


async def test_unplugged_port_turns_bad_once_and_comes_back(port: SensorPort) -> None:
    """The port vanishing makes points bad (unreachable) once; replugged, frames flow again.

    The one open after the loss is the one reopen counted: not the first open,
    nor the failed attempts while unplugged (those are transport errors).
    """
    source, sink = make_source(*sensor(port, "nova/sds011")), Collector()
    async with running(source, sink):
        port.write(sds_frame(10))
        await sink.wait_for(lambda: sink.values("pm2_5") == [1.0])
        assert source.status()["reopens"] == 0
        port.unplug()
        await sink.wait_for(lambda: bool(sink.points("pm2_5", Quality.BAD)))
        assert not source.connected
        await wait_until(lambda: source.counters["transport_errors"] >= 3)  # reopen fails
        assert [r.reason for r in sink.points("pm2_5", Quality.BAD)] == ["unreachable"]
        port.plug()
        await wait_until(lambda: source.connected)
        port.write(sds_frame(30))
        await sink.wait_for(lambda: sink.values("pm2_5") == [1.0, 3.0])
        assert source.state == "ok"
    assert source.counters["reopens"] == 1
    assert source.status()["connected"] is False


async def test_missing_port_at_start_is_retried(port: SensorPort) -> None:
    """A port that is not there yet is unreachable, and opened once it appears: not a reopen."""
    port.unplug()
    source, sink = make_source(*sensor(port, "nova/sds011")), Collector()
    async with running(source, sink, connected=False):
        await sink.wait_for(lambda: bool(sink.points("pm10", Quality.BAD)))
        port.plug()
        await wait_until(lambda: source.connected)
        port.write(sds_frame(12))
        await sink.wait_for(lambda: sink.values("pm10") == [2.4])
    assert source.counters["reopens"] == 0 and source.counters["transport_errors"] >= 1


async def test_shutdown_closes_the_port_and_leaves_nothing(port: SensorPort) -> None:
    """Cancelling the source closes the port (it can be opened again) with no task left."""
    source, sink = make_source(*sensor(port, "nova/sds011")), Collector()
    async with running(source, sink):
        pass
    assert not source.transport.is_open
    again = make_source(*sensor(port, "nova/sds011"))  # the exclusive lock was released
    async with running(again, sink):
        port.write(sds_frame(12))
        await sink.wait_for(lambda: sink.values("pm2_5") == [1.2])


# -- building ----------------------------------------------------------------------


def test_build_source_takes_exactly_one_sensor(tmp_path: Path) -> None:
    """build_source builds one sensor per line and refuses two, or passive mode without reads."""
    port = SensorPort(tmp_path)
    bus, dev = sensor(port, "plantower/pms5003")
    assert isinstance(build_source(bus, [dev], CTX), SerialSensorSource)
    _, other = sensor(port, "plantower/pms5003", device_id="s2")
    with pytest.raises(ConfigError, match="exactly one sensor"):
        build_source(bus, [dev, other], CTX)
    bus, gps = sensor(port, "u-blox/neo-6m", mode="passive")
    with pytest.raises(ConfigError, match="passive"):
        build_source(bus, [gps], CTX)


# -- the generic codec: a MaxBotix range finder --------------------------------------


async def test_maxbotix_cr_terminated_lines(port: SensorPort) -> None:
    """MaxBotix 'R1234<CR>' lines (no LF) give distances; mangled lines are counted."""
    source, sink = make_source(*sensor(port, "maxbotix/mb7389")), Collector()
    async with running(source, sink):
        stream = b"R1234\rR0300\rRx99\r\x00R4000\rR5000\rR0875 \r"
        await write_torn(port, stream, 11)
        await sink.wait_for(lambda: len(sink.values("distance")) == 4)
    assert sink.values("distance") == [1234, 300, 5000, 875]
    assert sink.points("distance")[0].unit == "mm"
    assert sink.points("distance")[0].family == "water"
    assert source.status()["rejected"] == {"no_match": 2}


def test_cr_line_framer_is_independent_of_tearing() -> None:
    """A CR-terminated line framer gives the same frames however the stream is torn."""
    stream = b"R1234\rR0300\r\nR5000\r" + b"R" * 40 + b"\rR0001\r"
    whole = LineFramer(16, eol=b"\r").feed(stream)
    for seed in range(20):
        framer, rng, items, pos = LineFramer(16, eol=b"\r"), random.Random(seed), [], 0
        while pos < len(stream):
            step = rng.randint(1, 7)
            items += framer.feed(stream[pos : pos + step])
            pos += step
        assert items == whole
    assert [i.data for i in whole if isinstance(i, Frame)] == [
        b"R1234", b"R0300", b"\nR5000", b"R0001"
    ]  # fmt: skip
    assert [i.reason for i in whole if isinstance(i, Rejection)] == ["bad_length"]


# -- every bad input is counted, logs are summarised ----------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(0, 300))
def test_random_bytes_become_counted_rejections(data: bytes, cut: int) -> None:
    """Arbitrary bytes through each codec's frame path never raise and yield only good data."""
    port = SensorPort(Path("/nonexistent"))
    for profile in ("plantower/pms5003", "nova/sds011", "u-blox/neo-6m", "maxbotix/mb7389"):
        source = make_source(*sensor(port, profile))
        ts = datetime.now(UTC)
        readings = source.feed(data[:cut], ts) + source.feed(data[cut:], ts)
        assert all(r.quality == Quality.GOOD or r.reason == "no_fix" for r in readings)
        assert "codec_error" not in str(source.status()["rejected"])


async def test_many_bad_frames_are_logged_in_a_summary(port: SensorPort) -> None:
    """Hundreds of bad frames give one line per reason plus one summary line, all counted."""
    bus, dev = sensor(port, "nova/sds011")
    source, sink = make_source(bus, dev, summary_interval_s=0.2), Collector()
    with capture_logs() as logs:
        async with running(source, sink):
            port.write(sds_frame(1, bad_checksum=True) * 200 + b"\x01\x02" + sds_frame(3))
            await sink.wait_for(lambda: sink.values("pm2_5") == [0.3])
            await wait_until(lambda: any(e["event"] == "frames_rejected" for e in logs))
    assert source.status()["rejected"] == {"bad_checksum": 200, "garbage": 1}
    events = [e["event"] for e in logs]
    assert events.count("frame_rejected") == 2 and events.count("frames_rejected") == 1
    summary = next(e for e in logs if e["event"] == "frames_rejected")
    assert summary["counts"] == {"bad_checksum": 199}
    assert device_status(source)["errors_total"] == 201


async def test_transport_drops_the_oldest_chunk_when_the_reader_stalls(port: SensorPort) -> None:
    """With the chunk queue full the oldest chunk is dropped and counted; the newest is kept."""
    bus, _ = sensor(port, "nova/sds011")
    transport = SerialTransport(LineSettings.from_bus(bus), max_chunks=2)
    await transport.open()
    try:
        for n in range(4):
            port.write(bytes([n]) * 10)
            await wait_until(lambda n=n: transport.bytes_in == 10 * (n + 1))
        assert (transport.overflow_chunks, transport.overflow_bytes) == (2, 20)
        assert [await transport.read(), await transport.read()] == [b"\x02" * 10, b"\x03" * 10]
        port.unplug()
        with pytest.raises(TransientError):
            await asyncio.wait_for(transport.read(), 2.0)
    finally:
        await transport.close()
    assert not transport.is_open
