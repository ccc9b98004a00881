"""BLE driver: adverts through bleak's detection callback to readings at the sink."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog import get_logger as structlog_logger
from structlog.testing import capture_logs

from cityedge.config.model import BusConfig, DeviceConfig, SiteConfig
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.ble import bthome
from cityedge.drivers.ble.counters import CounterStore
from cityedge.drivers.ble.driver import BleSource, build_source
from cityedge.drivers.ble.scanner import Advert, is_passive_unsupported, or_patterns
from cityedge.profiles import FieldMap, Profile
from cityedge.readings import Quality, Reading
from cityedge.sources import SourceContext, factory
from tests.peers.ble import Air, air_fixture  # noqa: F401  (the air fixture)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
BLE = json.loads((VECTORS / "ble.json").read_text())
BTHOME = BLE["bthome_v2"]
RUUVI = BLE["ruuvi_rawv2"]
UUID = BTHOME["service_uuid"]
PROFILES = Path(__file__).resolve().parents[1] / "firmware-profiles"
ENC = next(v for v in BTHOME["vectors"] if "bind_key" in v)
PLAIN_MAC = "A4:C1:38:00:11:22"
RUUVI_MAC = RUUVI["vectors"][0]["expect"]["mac"]
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY_MAC = "A4:C1:38:AA:BB:CC"
SITE = SiteConfig(id="s", gateway_id="gw", latitude=60.17, longitude=24.94)
SITE_TS = datetime(2024, 1, 1, tzinfo=UTC)

# Every object the vectors carry, mapped one to one (a profile written for the test).
ALL_BTHOME = Profile(
    name="test/bthome",
    vendor="test",
    model="any BTHome",
    family="environment",
    protocol="ble",
    codec="bthome",
    fields=tuple(
        FieldMap(key=k, name=k, family="environment")
        for k in ("battery", "temperature", "humidity", "pressure")
    ),
)


def device(
    dev_id: str, mac: str, profile: Profile | str, bind_key: bytes | None = None
) -> DeviceConfig:
    prof = load_profile(PROFILES, profile) if isinstance(profile, str) else profile
    options: dict[str, Any] = {"mac": mac}
    if bind_key is not None:
        options["bind_key"] = bind_key.hex()
    return DeviceConfig(
        id=dev_id, bus="ble0", profile_name=prof.name, profile=prof, options=options
    )


def bus(**options: Any) -> BusConfig:
    return BusConfig(name="ble0", type="ble", options=options)


def source(
    tmp_path: Path, devices: Sequence[DeviceConfig], air: Air | None, **kwargs: Any
) -> BleSource:
    opts = kwargs.pop("options", {})
    ctx = SourceContext(site=SITE, state_dir=tmp_path)
    scanner = air.factory() if air is not None else None
    return build_source(bus(**opts), devices, ctx, scanner_factory=scanner, **kwargs)


async def until(cond: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Sink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def by_point(self, device: str) -> dict[str, Reading]:
        return {r.point: r for r in self.readings if r.device == device}


def has_readings(sink: Sink, n: int) -> bool:
    return len(sink.readings) >= n


@contextlib.asynccontextmanager
async def running(src: BleSource, air: Air | None = None) -> AsyncIterator[Sink]:
    sink = Sink()
    task = asyncio.create_task(src.run(sink))
    try:
        if air is not None:
            await until(lambda: bool(air.scanners) or task.done())
        yield sink
        await asyncio.sleep(0.02)  # let the pump drain what was just advertised
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled(), "run() ended by itself"


def ad(payload: str | bytes) -> dict[str, bytes]:
    return {UUID: bytes.fromhex(payload) if isinstance(payload, str) else payload}


def enc(counter: int, objects: str = "02ca0903bf13", mac: str = KEY_MAC) -> dict[str, bytes]:
    return ad(bthome.encrypt(bytes.fromhex(objects), mac, KEY, counter))


# --- published vectors through the real path ------------------------------------------


async def test_bthome_vectors_reach_the_sink(tmp_path: Path, air: Air) -> None:
    """Every published BTHome v2 vector, advertised, reaches the sink with its values."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME)]
    devs.append(device("sealed", ENC["mac"], ALL_BTHOME, bytes.fromhex(ENC["bind_key"])))
    src = source(tmp_path, devs, air)
    for vec in BTHOME["vectors"]:
        async with running(src, air) as sink:
            mac = vec.get("mac", PLAIN_MAC)
            air.advertise(mac, service_data=ad(vec["service_data"]), rssi=-71)
            dev_id = "sealed" if "bind_key" in vec else "plain"
            wanted = len(vec["expect"]) - ("packet_id" in vec["expect"])
            await until(functools.partial(has_readings, sink, wanted))
        got = sink.by_point(dev_id)
        for name, value in vec["expect"].items():
            if name == "packet_id":
                assert all(r.meta["packet_id"] == value for r in got.values())
                continue
            assert got[name].value == value, name
            assert got[name].quality is Quality.GOOD
            assert got[name].meta["rssi"] == -71
        if "bind_key" in vec:
            assert all(r.meta["counter"] == vec["expect_counter"] for r in got.values())


async def test_ruuvi_vector_reaches_the_sink(tmp_path: Path, air: Air) -> None:
    """The published RAWv2 vector reaches the sink through the RuuviTag profile."""
    vec = RUUVI["vectors"][0]
    src = source(tmp_path, [device("tag", RUUVI_MAC, "ruuvi/ruuvitag")], air)
    async with running(src, air) as sink:
        data = {RUUVI["company_id"]: bytes.fromhex(vec["manufacturer_data"])}
        air.advertise(RUUVI_MAC, manufacturer_data=data, rssi=-80)
        await until(lambda: len(sink.readings) == 9)
    got = sink.by_point("tag")
    exp = vec["expect"]
    assert got["temperature"].value == exp["temperature"]
    assert got["temperature"].unit == "Cel"
    assert got["humidity"].value == exp["humidity"]
    assert got["pressure"].value == exp["pressure_pa"] / 100
    assert got["pressure"].unit == "hPa"
    accel = [got[f"acceleration_{a}"].value for a in "xyz"]
    assert accel == exp["acceleration_g"]
    assert got["battery_voltage"].value == exp["battery_v"]
    assert got["tx_power"].value == exp["tx_power_dbm"]
    assert got["movement_counter"].value == exp["movement_counter"]
    r = got["temperature"]
    assert r.meta == {"rssi": -80, "sequence": exp["sequence"]}
    assert r.family == "environment" and r.cell and r.ts.tzinfo is not None


async def test_shelly_blu_ht_profile_reads_its_documented_objects(tmp_path: Path, air: Air) -> None:
    """A Shelly BLU H&T packet (objects from its docs) maps to the profile's points."""
    # packet id 7, battery 100 %, humidity 0x2E 55 %, button press, temperature 0x45 22.5 C
    payload = "40" + "0007" + "0164" + "2e37" + "3a01" + "45e100"
    src = source(tmp_path, [device("ht", PLAIN_MAC, "shelly/blu-ht")], air)
    async with running(src, air) as sink:
        air.advertise(PLAIN_MAC, service_data=ad(payload))
        await until(lambda: len(sink.readings) == 4)
    got = {p: r.value for p, r in sink.by_point("ht").items()}
    assert got == {"battery": 100, "humidity": 55, "button": "press", "temperature": 22.5}


# --- encryption and replay ----------------------------------------------------------


async def test_replayed_counter_rejected_also_after_restart(tmp_path: Path, air: Air) -> None:
    """A counter not above the last accepted is rejected and counted, across a restart too."""
    devs = [device("sealed", KEY_MAC, ALL_BTHOME, KEY)]
    src = source(tmp_path, devs, air)
    async with running(src, air) as sink:
        air.advertise(KEY_MAC, service_data=enc(10))
        air.advertise(KEY_MAC, service_data=enc(11, "02cb09"))
        air.advertise(KEY_MAC, service_data=enc(10, "02cc09"))  # an old counter, new bytes
        await until(lambda: src.rejected["replayed"] == 1)
    assert [r.meta["counter"] for r in sink.readings] == [10, 10, 11]
    stored = json.loads((tmp_path / "ble.json").read_text())
    assert list(stored["bthome_counters"].values()) == [{"mac": KEY_MAC, "counter": 11}]

    again = source(tmp_path, devs, air)
    async with running(again, air) as sink:
        air.advertise(KEY_MAC, service_data=enc(11, "02cb09"))  # the last packet, replayed
        await until(lambda: again.rejected["replayed"] == 1)
        air.advertise(KEY_MAC, service_data=enc(12, "02cd09"))
        await until(lambda: len(sink.readings) == 1)
    assert sink.readings[0].value == 25.09 and sink.readings[0].meta["counter"] == 12
    assert again.status()["devices"]["sealed"]["errors"] == {"replayed": 1}  # type: ignore[index]


async def test_wrong_bind_key_is_a_counted_rejection(tmp_path: Path, air: Air) -> None:
    """An advert sealed with another key is rejected as bad_mic, once logged, all counted."""
    devs = [device("sealed", KEY_MAC, ALL_BTHOME, bytes(16))]
    src = source(tmp_path, devs, air)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            for n in range(3):
                air.advertise(KEY_MAC, service_data=enc(n + 1))
            await until(lambda: src.rejected["bad_mic"] == 3)
    assert sink.readings == []
    assert [e["reason"] for e in logs if e["event"] == "advert_rejected"] == ["bad_mic"]
    dev = src.status()["devices"]["sealed"]  # type: ignore[index]
    assert dev["state"] == "rejecting" and dev["errors_total"] == 3


async def test_plain_advert_refused_when_a_key_is_configured(tmp_path: Path, air: Air) -> None:
    """A tag with a bind key that suddenly sends in clear is refused (not_encrypted)."""
    src = source(tmp_path, [device("sealed", KEY_MAC, ALL_BTHOME, KEY)], air)
    async with running(src, air) as sink:
        air.advertise(KEY_MAC, service_data=ad("4002ca09"))
        await until(lambda: src.rejected["not_encrypted"] == 1)
    assert sink.readings == []


async def test_corrupt_counter_file_is_set_aside(tmp_path: Path, air: Air) -> None:
    """A corrupt ble.json is moved aside and logged; counters are kept again from then on."""
    (tmp_path / "ble.json").write_text('{"bthome_counters": {"1": {"mac": ')
    src = source(tmp_path, [device("sealed", KEY_MAC, ALL_BTHOME, KEY)], air)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            air.advertise(KEY_MAC, service_data=enc(5))
            await until(lambda: len(sink.readings) == 2)
    assert any(e["event"] == "ble_state_corrupt" for e in logs)
    assert (tmp_path / "ble.json.corrupt").exists()
    assert CounterStore(tmp_path / "ble.json", None).get(KEY_MAC) == 5


def test_counter_file_damaged_while_running_is_rewritten(tmp_path: Path) -> None:
    """A counter file damaged between writes is set aside and rewritten with every counter."""
    path = tmp_path / "ble.json"
    with capture_logs() as logs:
        store = CounterStore(path, structlog_logger())
        store.set("AA:AA:AA:AA:AA:AA", 7)
        path.write_text('{"bthome_counters": []}')  # valid JSON, not TinyDB's layout
        store.set("BB:BB:BB:BB:BB:BB", 3)
        store.close()
    assert [e["event"] for e in logs] == ["ble_state_corrupt"]
    again = CounterStore(path, structlog_logger())
    assert (again.get("AA:AA:AA:AA:AA:AA"), again.get("BB:BB:BB:BB:BB:BB")) == (7, 3)
    again.close()


async def test_state_dir_unusable_keeps_counters_in_memory(tmp_path: Path, air: Air) -> None:
    """A state_dir that cannot be written: logged once, replay still refused in memory."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    src = source(blocker / "state", [device("sealed", KEY_MAC, ALL_BTHOME, KEY)], air)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            for n, counter in enumerate((1, 2, 2, 3)):  # the second 2: other bytes
                air.advertise(KEY_MAC, service_data=enc(counter, f"02{n:02x}09"))
            await until(lambda: src.counters["adverts"] == 4)
    assert [r.meta["counter"] for r in sink.readings] == [1, 2, 3]
    assert src.rejected["replayed"] == 1
    events = [e["event"] for e in logs]
    assert events.count("ble_state_unreadable") == 1
    assert events.count("ble_state_write_failed") == 1


# --- de-duplication, unknown tags, bad payloads ----------------------------------------


async def test_repeated_adverts_are_deduplicated(tmp_path: Path, air: Air) -> None:
    """The same bytes, or the same packet id / sequence, within dedupe_s give one reading set."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME), device("tag", RUUVI_MAC, "ruuvi/ruuvitag")]
    src = source(tmp_path, devs, air)
    ruuvi = bytes.fromhex(RUUVI["vectors"][0]["manufacturer_data"])
    async with running(src, air) as sink:
        for _ in range(4):
            air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
        air.advertise(PLAIN_MAC, service_data=ad("40000902cb09"))  # packet id 9: new
        air.advertise(PLAIN_MAC, service_data=ad("40000902cc09"))  # packet id 9 again
        air.advertise(RUUVI_MAC, manufacturer_data={0x0499: ruuvi})
        other_reading_same_sequence = ruuvi[:1] + b"\x13" + ruuvi[2:]
        air.advertise(RUUVI_MAC, manufacturer_data={0x0499: other_reading_same_sequence})
        await until(lambda: src.counters["adverts"] == 8)
    plain = [r.value for r in sink.readings if r.device == "plain"]
    assert plain == [25.06, 25.07]
    assert len([r for r in sink.readings if r.device == "tag"]) == 9
    assert src.counters["duplicates"] == 5
    status = src.status()["devices"]
    assert status["plain"]["duplicates"] == 4 and status["tag"]["duplicates"] == 1  # type: ignore[index]


async def test_dedupe_window_lets_an_unchanged_tag_report_again(tmp_path: Path, air: Air) -> None:
    """After dedupe_s the same plain bytes are a new reading (a heartbeat of an idle tag)."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air,
                 options={"dedupe_s": 0.05})  # fmt: skip
    async with running(src, air) as sink:
        air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
        air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
        await until(lambda: src.counters["adverts"] == 2)
        await asyncio.sleep(0.06)
        air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
        await until(lambda: len(sink.readings) == 2)
    assert src.counters["duplicates"] == 1


async def test_unknown_mac_ignored_and_counted_not_logged(tmp_path: Path, air: Air) -> None:
    """Adverts from tags not in the config are counted, not logged, and give no reading."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            for n in range(20):
                air.advertise(f"11:22:33:44:55:{n:02X}", service_data=ad("4002ca09"))
            air.advertise(PLAIN_MAC, manufacturer_data={0x004C: b"\x02\x15"})  # no BTHome
            await until(lambda: src.counters["adverts"] == 21)
    assert sink.readings == []
    assert src.status()["rejected"] == {"unknown_mac": 20}
    assert src.counters["no_payload"] == 1
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]


@pytest.mark.parametrize(
    ("mac", "payload", "reason"),
    [
        (PLAIN_MAC, ad("40"), None),  # no objects at all: accepted, nothing to map
        (PLAIN_MAC, ad("4002ca"), "truncated"),
        (PLAIN_MAC, ad("0002ca09"), "bad_version"),
        (PLAIN_MAC, ad("41e445f3c9962b3322"), "no_bind_key"),
        (RUUVI_MAC, {"mfr": bytes.fromhex("0512fc")}, "bad_length"),
        (RUUVI_MAC, {"mfr": bytes.fromhex("03291a1ec7a002e8")}, "unsupported_format"),
    ],
)
async def test_bad_payloads_counted_by_reason(
    tmp_path: Path, air: Air, mac: str, payload: dict[str, bytes], reason: str | None
) -> None:
    """Each kind of malformed payload is a rejection counted under its own reason."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME), device("tag", RUUVI_MAC, "ruuvi/ruuvitag")]
    src = source(tmp_path, devs, air)
    async with running(src, air) as sink:
        if "mfr" in payload:
            air.advertise(mac, manufacturer_data={0x0499: payload["mfr"]})
        else:
            air.advertise(mac, service_data=payload)
        await until(lambda: src.counters["adverts"] == 1)
    assert sink.readings == []
    assert src.status()["rejected"] == ({reason: 1} if reason else {})


async def test_unmapped_values_counted_not_forwarded(tmp_path: Path, air: Air) -> None:
    """A value the profile does not map (pressure on a Shelly BLU H&T) is counted, not sent."""
    src = source(tmp_path, [device("ht", PLAIN_MAC, "shelly/blu-ht")], air)
    async with running(src, air) as sink:
        air.advertise(PLAIN_MAC, service_data=ad("4002ca0904138a01"))
        await until(lambda: len(sink.readings) == 1)
    assert [r.point for r in sink.readings] == ["temperature"]
    assert src.rejected["unmapped"] == 1


# --- the queue ------------------------------------------------------------------------


async def test_queue_overflow_drops_oldest_and_counts(tmp_path: Path, air: Air) -> None:
    """A burst beyond the queue bound drops the oldest adverts, counted; the newest get through."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air, queue_size=4)
    async with running(src, air) as sink:
        for n in range(10):  # no await between: the pump cannot run
            air.advertise(PLAIN_MAC, service_data=ad(f"4000{n:02x}02{n:02x}00"))
        await until(lambda: len(sink.readings) == 4)
    assert [r.meta["packet_id"] for r in sink.readings] == [6, 7, 8, 9]
    status = src.status()
    assert status["rejected"] == {"queue_overflow": 6}
    assert status["queue"] == {"size": 0, "max": 4, "dropped": 6}


async def test_adverts_from_another_thread_are_handed_over(tmp_path: Path, air: Air) -> None:
    """A callback on a foreign thread (CoreBluetooth, WinRT) goes through call_soon_threadsafe."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air)
    async with running(src, air) as sink:
        thread = threading.Thread(
            target=air.advertise, args=(PLAIN_MAC,), kwargs={"service_data": ad("4002ca09")}
        )
        thread.start()
        await asyncio.to_thread(thread.join, 2.0)
        await until(lambda: len(sink.readings) == 1)
    assert sink.readings[0].value == 25.06


# --- the adapter ----------------------------------------------------------------------


async def test_passive_scan_uses_or_patterns(tmp_path: Path, air: Air) -> None:
    """Passive scanning (the default) asks BlueZ for the BTHome and Ruuvi or-patterns."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air,
                 options={"adapter": "hci1"})  # fmt: skip
    async with running(src, air):
        pass
    assert air.starts == [("passive", "hci1", or_patterns())]
    assert src.effective_mode == "passive"


async def test_passive_unavailable_falls_back_to_active(tmp_path: Path, air: Air) -> None:
    """BlueZ without the advertisement monitor: warn and scan actively; readings flow."""
    error = "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled"
    air.refuse("passive", BleakError(error))
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
            await until(lambda: len(sink.readings) == 1)
    assert [m for m, _, _ in air.starts] == ["passive", "active"]
    assert [e["log_level"] for e in logs if e["event"] == "passive_scan_unavailable"] == ["warning"]
    assert src.status()["scan_mode_in_use"] == "active"


@pytest.mark.parametrize(
    ("error", "passive_only"),
    [
        (BleakError("passive scanning mode requires bluez or_patterns"), True),
        (BleakDBusError("org.bluez.Error.NotSupported", []), True),
        (BleakError("adapter 'hci0' not found"), False),
        (BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []), False),
        (
            BleakBluetoothNotAvailableError("off", BleakBluetoothNotAvailableReason.POWERED_OFF),
            False,
        ),
        (FileNotFoundError(2, "No such file or directory"), False),
    ],
)
def test_which_errors_mean_passive_is_unsupported(error: Exception, passive_only: bool) -> None:
    """Only errors saying passive scanning cannot work fall back to active; others: no adapter."""
    assert is_passive_unsupported(error) is passive_only


async def test_adapter_missing_then_back(tmp_path: Path, air: Air) -> None:
    """No adapter: points bad once, retried with backoff; when it appears, readings flow."""
    missing = [BleakError("adapter 'hci0' not found") for _ in range(3)]
    air.refuse("passive", *missing)
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME), device("tag", RUUVI_MAC, "ruuvi/ruuvitag")]
    src = source(tmp_path, devs, air, reopen_min_s=0.01, reopen_max_s=0.02)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
            await until(lambda: len(sink.readings) == 4 + 9 + 1)
    bad = [r for r in sink.readings if r.quality is Quality.BAD]
    assert len(bad) == 4 + 9 and {r.reason for r in bad} == {"no_adapter"}
    assert sink.readings[-1].value == 25.06 and sink.readings[-1].quality is Quality.GOOD
    events = [e["event"] for e in logs]
    assert events.count("ble_adapter_missing") == 1
    assert "ble_adapter_recovered" in events
    assert src.counters["scan_failures"] == 3
    assert src.status()["devices"]["plain"]["state"] == "ok"  # type: ignore[index]


async def test_no_adapter_with_real_bleak(tmp_path: Path) -> None:
    """On this machine (no Bluetooth, no BlueZ): real bleak fails, run() keeps retrying quietly."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME), device("ht", KEY_MAC, "shelly/blu-ht")]
    ctx = SourceContext(site=SITE, state_dir=tmp_path, clock_ok=lambda: False)
    src = factory("ble")(bus(), devs, ctx)
    assert isinstance(src, BleSource)
    src._reopen.base_s, src._reopen.cap_s = 0.01, 0.05
    before = asyncio.all_tasks()
    with capture_logs() as logs:
        async with running(src) as sink:
            await until(lambda: src.counters["scan_failures"] >= 3, within=5.0)
    assert len(sink.readings) == 4 + 4
    assert {(r.quality, r.reason, r.time_ok) for r in sink.readings} == {
        (Quality.BAD, "no_adapter", False)
    }
    missing = [e for e in logs if e["event"] == "ble_adapter_missing"]
    assert len(missing) == 1 and missing[0]["log_level"] == "error"
    assert "bluetoothctl" in missing[0]["hint"] and missing[0]["devices"] == ["plain", "ht"]
    status = src.status()
    assert status["connected"] is False
    assert status["devices"]["ht"]["state"] == "no_adapter"  # type: ignore[index]
    json.dumps(status)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before


async def test_silence_restarts_the_scanner_without_bad_readings(tmp_path: Path, air: Air) -> None:
    """No advert at all for silence_restart_s: the scan is restarted, points are not made bad."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME)]
    src = source(tmp_path, devs, air, silence_restart_s=0.02)
    with capture_logs() as logs:
        async with running(src, air) as sink:
            await until(lambda: len(air.starts) >= 3)
            await until(lambda: bool(air.scanners))
            air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
            await until(lambda: len(sink.readings) == 1)
    assert sink.readings[0].quality is Quality.GOOD
    assert "scan_silent_restart" in [e["event"] for e in logs]
    assert src.counters["scan_failures"] == 0


async def test_summary_is_logged_each_interval(tmp_path: Path, air: Air) -> None:
    """One ble_summary line per interval carries frames, rejections and drops."""
    src = source(tmp_path, [device("plain", PLAIN_MAC, ALL_BTHOME)], air, summary_interval_s=0.02)
    with capture_logs() as logs:
        async with running(src, air):
            air.advertise(PLAIN_MAC, service_data=ad("4002ca09"))
            air.advertise("11:22:33:44:55:66", service_data=ad("4002ca09"))
            await until(lambda: any(e["event"] == "ble_summary" and e["frames"] for e in logs))
    summary = next(e for e in logs if e["event"] == "ble_summary" and e["frames"])
    assert summary["frames"] == 1 and summary["rejected"] == {"unknown_mac": 1}
    assert summary["queue_dropped"] == 0


# --- fuzz -----------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    service=st.binary(max_size=40),
    mfr=st.binary(max_size=40),
    encrypted=st.booleans(),
)
def test_random_adverts_never_raise(
    tmp_path: Path, service: bytes, mfr: bytes, encrypted: bool
) -> None:
    """Arbitrary service and manufacturer data never raise out of the advert handling."""
    devs = [device("plain", PLAIN_MAC, ALL_BTHOME), device("tag", RUUVI_MAC, "ruuvi/ruuvitag"),
            device("sealed", KEY_MAC, ALL_BTHOME, KEY)]  # fmt: skip
    src = source(tmp_path, devs, None)
    src._store = CounterStore(tmp_path / "fuzz.json", None)
    if encrypted:
        service = bytes([0x41]) + service
    try:
        for mac in (PLAIN_MAC, RUUVI_MAC, KEY_MAC):
            src._handle(Advert(mac, {UUID: service}, {0x0499: mfr}, -50, SITE_TS, 0.0))
    finally:
        src._store.close()
    assert src.rejected["internal_error"] == 0
