"""The LoRaWAN driver through a real UDP socket, a packet forwarder emulator playing the gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityedge.config.profile_loader import load_profile
from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import join, mac, phy, semtech
from cityedge.drivers.lorawan.driver import LoRaWANSource
from cityedge.drivers.lorawan.payload import decode_payload
from cityedge.profiles import FieldMap
from cityedge.readings import Quality
from cityedge.sim.lora_sim import ForwarderEmulator, encode_lpp
from tests.peers.forwarder import (
    APP,
    NWK,
    PROFILES,
    abp_device,
    free_udp_port,
    lora_profile,
    make_source,
    otaa_device,
    rig,
    until,
)
from tests.peers.modbus import Collector, async_test, running

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
LORAWAN = json.loads((VECTORS / "lorawan.json").read_text())
CAYENNE = json.loads((VECTORS / "cayenne_lpp.json").read_text())

CLIMATE = lora_profile(
    "cayenne",
    [FieldMap("3.temperature", "temperature", unit="Cel"), FieldMap("5.humidity", "humidity")],
)


def by_point(readings: list[Any]) -> dict[str, Any]:
    return {r.point: r for r in readings}


@async_test
async def test_encrypted_uplink_decodes_through_the_driver(tmp_path: Path) -> None:
    """A frame built with the LoRaWAN crypto reaches the sink with values, units and radio meta."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    async with rig(tmp_path, [dev]) as r:
        payload = encode_lpp([(3, "temperature", 21.7), (5, "humidity", 48.5)])
        token = r.gw.send_uplink("26011BDA", 7, 2, payload, NWK, APP, rssi=-93, snr=5.25)
        assert await r.gw.wait_push_ack(token)
        got = by_point(await r.readings(2))
    temp = got["temperature"]
    assert temp.value == 21.7 and temp.unit == "Cel" and temp.quality == Quality.GOOD
    assert got["humidity"].value == 48.5 and got["humidity"].unit == "%"  # the codec's unit
    assert temp.device == "climate-1" and temp.family == "environment" and temp.cell
    assert temp.ts.utcoffset() is not None and temp.ts.utcoffset().total_seconds() == 0
    meta = temp.meta
    assert (meta["rssi"], meta["snr"], meta["freq"], meta["datr"]) == (-93, 5.25, 868.1, "SF7BW125")
    assert (meta["gateway"], meta["fcnt"], meta["fport"]) == ("AA555A0000000001", 7, 2)
    assert r.source.status()["devices"]["climate-1"]["fcnt_up"] == 7  # type: ignore[index]


@async_test
async def test_published_lorawan_vectors_reach_the_sink(tmp_path: Path) -> None:
    """Every lorawan.json vector is verified, decrypted and delivered as readings by the driver."""
    profile = lora_profile("cayenne", [("116.illuminance", "lux"), ("1.analog_input", "level")])
    devices = [
        abp_device(
            f"vec{i}",
            profile,
            v["expect"]["dev_addr"],
            bytes.fromhex(v["nwk_s_key"]),
            bytes.fromhex(v["app_s_key"]),
        )
        for i, v in enumerate(LORAWAN["vectors"])
    ]
    async with rig(tmp_path, devices) as r:
        for v in LORAWAN["vectors"]:
            r.gw.send_phy(bytes.fromhex(v["phy_payload"]))
        readings = await r.readings(len(devices))
        downlink = await r.gw.next_downlink()  # vector 2 is a confirmed uplink: ACKed in RX1
    status = r.source.status()["devices"]
    for i, v in enumerate(LORAWAN["vectors"]):
        want = v["expect"]
        (reading,) = [x for x in readings if x.device == f"vec{i}"]
        plain = bytes.fromhex(want["frm_payload_plain"])
        (value,) = decode_payload("cayenne", want["fport"], plain).values.values()
        assert reading.value == value
        assert reading.meta["fcnt"] == want["fcnt"] and reading.meta["fport"] == want["fport"]
        assert reading.meta["dev_addr"] == want["dev_addr"]
        fopts = phy.parse_mac_commands(bytes.fromhex(want["fopts"]), True)
        assert status[f"vec{i}"].get("mac_commands", {}) == {  # type: ignore[index,union-attr]
            c.name: 1 for c in fopts.commands
        }
    ack = phy.parse_phy(base64.b64decode(downlink.txpk["data"]))
    assert isinstance(ack, phy.DataFrame) and ack.ack and not ack.uplink
    assert ack.dev_addr_hex == "01020304"


@pytest.mark.parametrize("vector", CAYENNE["vectors"], ids=lambda v: v["hex"])
def test_cayenne_vectors_reach_the_sink(vector: dict[str, Any], tmp_path: Path) -> None:
    """Every cayenne_lpp.json vector arrives as readings through the driver."""
    want: dict[str, float] = {}
    for rec in vector["expect"]:
        base = f"{rec['channel']}.{rec['type']}"
        if isinstance(rec["value"], dict):
            want.update({f"{base}.{k}": v for k, v in rec["value"].items()})
        else:
            want[base] = rec["value"]
    names = {key: key.replace(".", "_") for key in want}
    profile = lora_profile("cayenne", list(names.items()))

    @async_test
    async def run() -> None:
        async with rig(tmp_path, [abp_device("lpp", profile, "26011BDA")]) as r:
            r.gw.send_uplink("26011BDA", 1, 1, bytes.fromhex(vector["hex"]), NWK, APP)
            got = by_point(await r.readings(len(want)))
        for key, value in want.items():
            assert math.isclose(got[names[key]].value, value, abs_tol=1e-9), key

    run()


@async_test
async def test_real_sensor_profiles_decode_through_the_driver(tmp_path: Path) -> None:
    """The shipped Dragino and Elsys profiles decode their published example payloads."""
    lht = abp_device("lht", load_profile(PROFILES, "dragino/lht65"), "26011B01")
    ers = abp_device("ers", load_profile(PROFILES, "elsys/ers"), "26011B02")
    ldds = abp_device("ldds", load_profile(PROFILES, "dragino/ldds75"), "26011B03")
    async with rig(tmp_path, [lht, ers, ldds]) as r:
        r.gw.send_uplink("26011B01", 1, 2, bytes.fromhex("CBF60B0D0376010ADD7FFF"), NWK, APP)
        r.gw.send_uplink(
            "26011B02", 1, 5, bytes.fromhex("0100E202290400270506060308070D62"), NWK, APP
        )
        r.gw.send_uplink("26011B03", 1, 2, bytes.fromhex("0CE40B0500010501"), NWK, APP)
        r.gw.send_uplink("26011B03", 2, 2, bytes.fromhex("0CE4000000010500"), NWK, APP)
        await r.readings(5 + 6 + 5 + 5)
        readings = r.sink.readings
    lht_got = by_point([x for x in readings if x.device == "lht"])
    assert lht_got["temperature"].value == 28.29 and lht_got["humidity"].value == 88.6
    assert lht_got["probe_temperature"].value == 27.81
    assert lht_got["battery_voltage"].value == 3.062 and lht_got["battery_status"].value == 3
    ers_got = by_point([x for x in readings if x.device == "ers"])
    assert ers_got["temperature"].value == 22.6 and ers_got["humidity"].value == 41
    assert ers_got["illuminance"].value == 39 and ers_got["motion_count"].value == 6
    assert ers_got["co2"].value == 776 and ers_got["battery_voltage"].value == 3.426
    distances = [x for x in readings if x.device == "ldds" and x.point == "distance"]
    assert distances[0].value == 2821 and distances[0].unit == "mm"
    assert distances[1].quality == Quality.BAD and distances[1].reason == "no_sensor"
    assert r.source.status()["devices"]["ers"]["unmapped"] == 0  # type: ignore[index]


def _datagram_with(rxpk: list[dict[str, Any]], eui: str = "AA555A0000000001") -> bytes:
    body = json.dumps({"rxpk": rxpk}).encode()
    return bytes((2, 0x12, 0x34, 0)) + bytes.fromhex(eui) + body


@async_test
async def test_bad_input_is_rejected_counted_and_the_listener_keeps_serving(tmp_path: Path) -> None:
    """Bad MIC, replay, bad base64, broken JSON, oversized, wrong version: each counted."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    lpp = encode_lpp([(3, "temperature", 20.0)])
    async with rig(tmp_path, [dev], max_datagram=1024) as r:
        gw = r.gw
        gw.send_uplink("26011BDA", 10, 2, lpp, NWK, APP)
        await r.readings(1)
        gw.send_uplink("26011BDA", 11, 2, lpp, bytes(16), APP)  # wrong NwkSKey
        await r.rejected("bad_mic")
        gw.send_uplink("26011BDA", 9, 2, lpp, NWK, APP)  # an old counter, correctly signed
        await r.rejected("replay")
        gw.send_uplink("26011BDA", 10, 2, encode_lpp([(3, "temperature", 99.0)]), NWK, APP)
        await r.rejected("replay", 2)  # the same counter with other content
        good = gw.rx_packet(phy.build_data_uplink("26011BDA", 12, 2, lpp, NWK, APP)).to_json()
        bad = dict(good, data="!!not base64!!")
        gw.send_raw(_datagram_with([bad, good]))  # one bad rxpk does not lose the good one
        await r.rejected("bad_base64")
        gw.send_raw(bytes((2, 0, 1, 0)) + bytes(8) + b'{"rxpk": [')
        await r.rejected("bad_json")
        gw.send_raw(bytes((2, 0, 1, 0)) + bytes(8) + b" " * 2000)
        await r.rejected("oversized")
        gw.send_raw(bytes((1, 0, 1, 2)) + bytes(8))
        await r.rejected("bad_version")
        gw.send_uplink("0BADBEEF", 1, 2, lpp, NWK, APP)
        await r.rejected("unknown_dev_addr")
        gw.send_uplink("26011BDA", 13, 2, lpp, NWK, APP)
        readings = await r.readings(3)
        assert [x.meta["fcnt"] for x in readings] == [10, 12, 13]
        status = r.source.status()
        assert status["connected"] is True
    dev_status = status["devices"]["climate-1"]  # type: ignore[index]
    assert dev_status["errors"] == {"bad_mic": 1, "replay": 2}
    assert dev_status["fcnt_up"] == 13


@async_test
async def test_an_identical_frame_after_the_duplicate_window_is_a_replay(tmp_path: Path) -> None:
    """The same bytes again: a copy within the window, a replay after it."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    frame = phy.build_data_uplink("26011BDA", 3, 2, encode_lpp([(3, "temperature", 1.0)]), NWK, APP)
    async with rig(tmp_path, [dev]) as r:
        r.source.duplicate_window_s = 0.3
        r.gw.send_phy(frame)
        await r.readings(1)
        r.gw.send_phy(frame)
        await until(lambda: r.source.counters["duplicates"] >= 1)
        await asyncio.sleep(0.35)
        r.gw.send_phy(frame)
        await r.rejected("replay")
    assert len(r.sink.readings) == 1


@async_test
async def test_counters_survive_a_driver_restart(tmp_path: Path) -> None:
    """A new driver on the same state dir still rejects the old counter as a replay."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    lpp = encode_lpp([(3, "temperature", 20.0)])
    frame = phy.build_data_uplink("26011BDA", 40, 2, lpp, NWK, APP)
    async with rig(tmp_path, [dev]) as r:
        r.gw.send_phy(frame)
        await r.readings(1)
    async with rig(tmp_path, [dev]) as r2:
        r2.gw.send_phy(frame)  # captured on the air, replayed after the restart
        await r2.rejected("replay")
        r2.gw.send_uplink("26011BDA", 41, 2, lpp, NWK, APP)
        (reading,) = await r2.readings(1)
    assert reading.meta["fcnt"] == 41


@async_test
async def test_a_corrupt_state_file_is_set_aside_counted_and_the_driver_runs(
    tmp_path: Path,
) -> None:
    """A torn JSON state file: moved aside, counted, logged; the driver serves from config."""
    (tmp_path / "lorawan-lora.json").write_text('{"sessions": {"1": {"dev_eui": "00')
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    async with rig(tmp_path, [dev]) as r:
        assert r.source.rejected["state_corrupt"] == 1
        r.gw.send_uplink("26011BDA", 5, 2, encode_lpp([(3, "temperature", 20.0)]), NWK, APP)
        await r.readings(1)
    _check_state_files(tmp_path)


def _check_state_files(tmp_path: Path) -> None:
    assert list(tmp_path.glob("lorawan-lora.json.corrupt-*"))
    saved = json.loads((tmp_path / "lorawan-lora.json").read_text())
    assert [s["fcnt_up"] for s in saved["sessions"].values()] == [5]


@async_test
async def test_otaa_join_end_to_end(tmp_path: Path) -> None:
    """Join through the emulator: JoinAccept in a PULL_RESP, then uplinks with derived keys."""
    app_key = bytes.fromhex("b6b53f4a168a7a88bdf7ea135ce9cfca")
    dev_eui, join_eui = "70B3D57ED0000001", "70B3D57ED0000000"
    dev = otaa_device("otaa-1", CLIMATE, dev_eui, app_key)
    async with rig(tmp_path, [dev]) as r:
        accept, keys = await r.gw.join(join_eui, dev_eui, 0x1234, app_key)
        r.gw.send_uplink(
            accept.dev_addr,
            0,
            3,
            encode_lpp([(3, "temperature", 18.5)]),
            keys.nwk_s_key,
            keys.app_s_key,
        )
        (reading,) = await r.readings(1)
        r.gw.send_join(join_eui, dev_eui, 0x1234, app_key)  # a replayed join request
        await r.rejected("devnonce_reused")
        with pytest.raises(TimeoutError):
            await r.gw.next_downlink(0.3)
    assert reading.value == 18.5 and reading.meta["dev_addr"] == f"{accept.dev_addr:08X}"
    status = r.source.status()["devices"]["otaa-1"]  # type: ignore[index]
    assert status["joins"] == 1 and status["dev_addr"] == f"{accept.dev_addr:08X}"


@async_test
async def test_join_accept_timing_and_channel(tmp_path: Path) -> None:
    """The JoinAccept goes 5 s after the request's tmst, on its frequency and data rate."""
    app_key = bytes(range(16))
    dev = otaa_device("otaa-2", CLIMATE, "70B3D57ED0000002", app_key)
    async with rig(tmp_path, [dev]) as r:
        rx = r.gw.rx_packet(
            join.build_join_request("0000000000000000", "70B3D57ED0000002", 7, app_key),
            rssi=-80,
            snr=3.0,
        )
        r.gw.push([rx])
        resp = await r.gw.next_downlink()
    assert resp.txpk["tmst"] == (rx.tmst + 5_000_000) & 0xFFFFFFFF
    assert (resp.txpk["freq"], resp.txpk["datr"], resp.txpk["ipol"]) == (868.1, "SF7BW125", True)


@async_test
async def test_the_same_uplink_from_two_gateways_is_kept_once(tmp_path: Path) -> None:
    """Two gateways hear one frame: one set of readings, with the best copy's RSSI and SNR."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    frame = phy.build_data_uplink("26011BDA", 1, 2, encode_lpp([(3, "temperature", 5.0)]), NWK, APP)
    async with rig(tmp_path, [dev], gateway_eui="AA555A0000000001", dedupe_s=0.2) as r:
        gw2 = ForwarderEmulator(("127.0.0.1", r.port), "AA555A0000000002")
        async with gw2:
            r.gw.send_phy(frame, rssi=-115, snr=-7.0)
            gw2.send_phy(frame, rssi=-64, snr=9.5)
            await r.readings(1)
            await asyncio.sleep(0.3)
    (reading,) = r.sink.readings
    assert (reading.meta["gateway"], reading.meta["rssi"], reading.meta["snr"]) == (
        "AA555A0000000002",
        -64,
        9.5,
    )
    assert reading.meta["gateways"] == 2 and r.source.counters["duplicates"] == 1


@async_test
async def test_mac_commands_and_unmapped_values_are_counted(tmp_path: Path) -> None:
    """FOpts MAC commands are parsed and counted; a value no field maps is counted, not sent."""
    dev = abp_device("climate-1", CLIMATE, "26011BDA")
    async with rig(tmp_path, [dev]) as r:
        lpp = encode_lpp([(3, "temperature", 20.0), (9, "illuminance", 300)])
        r.gw.send_uplink("26011BDA", 1, 2, lpp, NWK, APP, fopts=bytes.fromhex("0206FF0A"))
        (reading,) = await r.readings(1)
        await asyncio.sleep(0.05)
    status = r.source.status()["devices"]["climate-1"]  # type: ignore[index]
    assert status["mac_commands"] == {"LinkCheckReq": 1, "DevStatusAns": 1}
    assert status["unmapped"] == 1 and reading.point == "temperature"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: bytes((2, 1, 2, 0)) + bytes(8) + b),
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    [
                        "data",
                        "size",
                        "stat",
                        "modu",
                        "datr",
                        "tmst",
                        "freq",
                        "rssi",
                        "lsnr",
                        "codr",
                        "chan",
                        "rfch",
                    ]
                ),
                st.one_of(st.integers(), st.text(max_size=12), st.floats()),
            ),
            max_size=3,
        ).map(lambda items: _datagram_with(items)),
    )
)
def test_arbitrary_datagrams_never_raise_and_are_counted(data: bytes) -> None:
    """Random bytes or broken PUSH_DATA never raise out of the listener; each bad one is counted."""
    source = _fuzz_source()
    before, seen = sum(source.rejected.values()), source.counters["datagrams"]
    source.handle_datagram(data, ("127.0.0.1", 9))
    assert source.counters["datagrams"] == seen + 1
    assert "internal_error" not in source.rejected
    try:
        semtech.parse_datagram(data, source.max_datagram)
    except DecodeError:
        assert sum(source.rejected.values()) > before


_FUZZ: list[LoRaWANSource] = []


def _fuzz_source() -> LoRaWANSource:
    """One driver (never started: no socket) shared by the hypothesis examples."""
    if not _FUZZ:
        state = Path(tempfile.mkdtemp(prefix="lorawan-fuzz-"))
        source = make_source(state, [abp_device("d", CLIMATE, "26011BDA")], 1)
        source.dedupe_s = 0
        _FUZZ.append(source)
    return _FUZZ[0]


@async_test
async def test_a_silent_forwarder_is_noticed_and_its_return_too(tmp_path: Path) -> None:
    """No datagram for silence_s: devices read unreachable once; the forwarder's next
    keepalive ends the silence, and the next uplink brings the device back to ok."""
    dev = abp_device("lht", load_profile(PROFILES, "dragino/lht65"), "26011B01")
    port = free_udp_port()
    source = make_source(tmp_path, [dev], port, silence_s=1.0)
    sink = Collector()
    server = ("127.0.0.1", port)
    async with running(source, sink):
        await until(lambda: source.connected, 2.0)
        async with ForwarderEmulator(server, "AA555A0000000001", keepalive_s=0.2):
            await asyncio.sleep(1.5)  # keepalives every 0.2 s: never silent
            assert source.status()["forwarders"] == "ok" and not sink.readings
        await until(lambda: source.status()["forwarders"] == "silent", 5.0)
        await sink.wait_for(lambda: len(sink.readings) >= len(dev.profile.fields), 2.0)
        bad = list(sink.readings)
        assert {r.reason for r in bad} == {"unreachable"}
        assert {r.point for r in bad} == {f.name for f in dev.profile.fields}
        assert source.status()["devices"]["lht"]["state"] == "unreachable"
        await asyncio.sleep(1.0)
        assert len(sink.readings) == len(bad)  # once per silence, not at every check
        async with ForwarderEmulator(server, "AA555A0000000001", keepalive_s=0.2) as gw:
            assert source.status()["forwarders"] == "ok"
            gw.send_uplink("26011B01", 1, 2, bytes.fromhex("CBF60B0D0376010ADD7FFF"), NWK, APP)
            await until(lambda: len(sink.readings) > len(bad), 5.0)
        assert source.status()["devices"]["lht"]["state"] == "ok"


@async_test
async def test_link_check_and_device_time_requests_are_answered_in_rx1(tmp_path: Path) -> None:
    """MAC requests in FOpts get one RX1 downlink with LinkCheckAns and DeviceTimeAns,
    and the confirmed uplink's ACK rides on it."""
    dev = abp_device("lht", load_profile(PROFILES, "dragino/lht65"), "26011B01")
    async with rig(tmp_path, [dev]) as r:
        before = datetime.now(UTC)
        r.gw.send_uplink("26011B01", 1, 2, bytes.fromhex("CBF60B0D0376010ADD7FFF"), NWK, APP,
                         snr=-4.0, confirmed=True, fopts=bytes((0x02, 0x0D)))  # fmt: skip
        down = await r.gw.next_downlink()
        await r.readings(1)
    frame = phy.parse_phy(base64.b64decode(down.txpk["data"]))
    assert isinstance(frame, phy.DataFrame) and frame.ack and not frame.uplink
    assert down.txpk["tmst"] > 0
    link, when = phy.parse_mac_commands(frame.fopts, uplink=False).commands
    assert link.name == "LinkCheckAns" and link.payload == bytes((3, 1))  # -4 dB - (-7.5 dB)
    assert when.name == "DeviceTimeAns"
    seconds, _fraction = mac.gps_time(before)
    assert 0 <= int.from_bytes(when.payload[:4], "little") - seconds <= 2
    assert r.source.status()["devices"]["lht"]["mac_answers"] == 1


@async_test
async def test_a_listener_that_cannot_open_is_not_called_forwarder_silence(
    tmp_path: Path,
) -> None:
    """Our own socket down (the port taken) is not the forwarder's silence."""
    dev = abp_device("lht", load_profile(PROFILES, "dragino/lht65"), "26011B01")
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        taken.bind(("127.0.0.1", 0))
        source = make_source(tmp_path, [dev], taken.getsockname()[1], silence_s=1.0)
        sink = Collector()
        async with running(source, sink):
            await asyncio.sleep(2.0)
            assert not source.connected
            assert source.status()["forwarders"] == "waiting" and not sink.readings
    finally:
        taken.close()


@async_test
async def test_a_value_the_profile_scale_overflows_is_a_counted_bad_reading(
    tmp_path: Path,
) -> None:
    """A field scale that pushes a decoded value past a double: a bad reading ``not_finite``,
    counted and logged, never ``Infinity`` in the uplink; the other fields stay good."""
    profile = lora_profile(
        "cayenne",
        [FieldMap("3.temperature", "temperature", scale=1e308), FieldMap("5.humidity", "humidity")],
    )
    async with rig(tmp_path, [abp_device("climate-1", profile, "26011BDA")]) as r:
        payload = encode_lpp([(3, "temperature", 21.7), (5, "humidity", 48.5)])
        r.gw.send_uplink("26011BDA", 1, 2, payload, NWK, APP)
        got = by_point(await r.readings(2))
    temp = got["temperature"]
    assert (temp.quality, temp.reason, temp.value) == (Quality.BAD, "not_finite", None)
    assert got["humidity"].value == 48.5 and got["humidity"].quality == Quality.GOOD
    assert r.source.rejected == {"not_finite": 1}
    json.dumps([x.to_record() for x in got.values()], allow_nan=False)
