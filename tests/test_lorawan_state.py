"""The LoRaWAN bus's safety edges: relaxed_fcnt restarts and replays, the EU868 band, and its
session state file (mode 0600, a renamed bus's file), through a real UDP socket."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.lorawan import phy, region
from cityedge.drivers.lorawan.driver import LoRaWANSource, build_source
from cityedge.drivers.lorawan.sessions import Session, SessionStore
from cityedge.profiles import FieldMap
from cityedge.sim.lora_sim import ForwarderEmulator, encode_lpp
from cityedge.sources import SourceContext
from tests.peers.forwarder import APP, NWK, SITE, abp_device, lora_profile, otaa_device, rig
from tests.peers.modbus import async_test

CLIMATE = lora_profile("cayenne", [FieldMap("3.temperature", "temperature", unit="Cel")])
ADDR = "26011BDA"


def _frame(fcnt: int, celsius: float) -> bytes:
    return phy.build_data_uplink(ADDR, fcnt, 2, encode_lpp([(3, "temperature", celsius)]), NWK, APP)


def _device_status(source: LoRaWANSource) -> dict[str, object]:
    devices = source.status()["devices"]
    assert isinstance(devices, dict)
    status: dict[str, object] = devices["door"]
    return status


# -- relaxed_fcnt ------------------------------------------------------------------


@async_test
async def test_relaxed_fcnt_accepts_a_restart_and_refuses_replays(tmp_path: Path) -> None:
    """relaxed_fcnt: a fresh frame counting from 0 again is a restart (logged at warning);
    a played-back restart frame, or an old counter of 16 or more, stays a replay."""
    dev = abp_device("door", CLIMATE, ADDR, relaxed_fcnt=True)
    first = _frame(1, 1.0)  # captured on the air by an attacker
    with capture_logs() as logs:
        async with rig(tmp_path, [dev]) as r:
            r.source.duplicate_window_s = 0.2
            r.gw.send_phy(first)
            r.gw.send_phy(_frame(40, 2.0))
            await r.readings(2)
            await asyncio.sleep(0.25)  # past the window: no longer another gateway's copy
            r.gw.send_phy(first)
            await r.rejected("replay")
            r.gw.send_phy(_frame(20, 3.0))  # correctly signed, behind, but not a restart
            await r.rejected("replay", 2)
            assert _device_status(r.source)["fcnt_up"] == 40
            r.gw.send_phy(_frame(0, 4.0))  # the device really restarted
            r.gw.send_phy(_frame(1, 5.0))  # and counts on: new bytes at counter 1
            readings = await r.readings(4)
            status = _device_status(r.source)
    assert [(x.meta["fcnt"], x.value) for x in readings] == [
        (1, 1.0),
        (40, 2.0),
        (0, 4.0),
        (1, 5.0),
    ]
    assert status["fcnt_resets"] == 1 and status["fcnt_up"] == 1
    assert status["errors"] == {"replay": 2}
    (reset,) = [e for e in logs if e["event"] == "fcnt_reset_accepted"]
    assert (reset["log_level"], reset["fcnt"], reset["last"]) == ("warning", 0, 40)


@async_test
async def test_a_replayed_restart_frame_stays_refused_after_an_agent_restart(
    tmp_path: Path,
) -> None:
    """The frames accepted near 0 are remembered in the state file: a new driver on the same
    state still refuses them as replays, while a fresh restart is accepted."""
    dev = abp_device("door", CLIMATE, ADDR, relaxed_fcnt=True)
    restart = _frame(0, 1.0)
    async with rig(tmp_path, [dev]) as r:
        r.gw.send_phy(_frame(30, 0.5))
        r.gw.send_phy(restart)
        await r.readings(2)
    async with rig(tmp_path, [dev]) as r2:
        r2.gw.send_phy(_frame(1, 2.0))
        await r2.readings(1)
        r2.gw.send_phy(restart)
        await r2.rejected("replay")
        r2.gw.send_phy(_frame(0, 3.0))
        (_, again) = await r2.readings(2)
    assert (again.meta["fcnt"], again.value) == (0, 3.0)
    assert _device_status(r2.source)["fcnt_resets"] == 1
    saved = json.loads((tmp_path / "lorawan-lora.json").read_text())["sessions"]
    assert [len(s["reset_seen"]) for s in saved.values()] == [3]


@async_test
async def test_a_previous_power_cycles_early_frame_is_refused_as_the_next_frame(
    tmp_path: Path,
) -> None:
    """After a restart, frame 3 of the cycle before would be 'the next frame' by its counter:
    its bytes were accepted before, so it is a replay, not fresh data."""
    dev = abp_device("door", CLIMATE, ADDR, relaxed_fcnt=True)
    async with rig(tmp_path, [dev]) as r:
        r.source.duplicate_window_s = 0.05
        earlier = [_frame(i, 10.0 + i) for i in range(6)]  # a recorder hears cycle A
        for frame in earlier:
            r.gw.send_phy(frame)
        r.gw.send_phy(_frame(40, 1.0))
        await r.readings(7)
        r.gw.send_phy(_frame(0, 99.0))  # the device restarts: new bytes
        await r.readings(8)
        await asyncio.sleep(0.1)
        r.gw.send_phy(earlier[3])
        await r.rejected("replay")
        r.gw.send_phy(_frame(1, 98.0))  # the device's own next frame still goes through
        (*_, last) = await r.readings(9)
    assert (last.meta["fcnt"], last.value) == (1, 98.0)


@async_test
async def test_without_relaxed_fcnt_a_restart_is_a_replay(tmp_path: Path) -> None:
    """The default: a counter that went back is refused, whatever it is."""
    dev = abp_device("door", CLIMATE, ADDR)
    async with rig(tmp_path, [dev]) as r:
        r.gw.send_phy(_frame(5, 1.0))
        await r.readings(1)
        r.gw.send_phy(_frame(0, 2.0))
        await r.rejected("replay")
    assert len(r.sink.readings) == 1 and "fcnt_resets" not in _device_status(r.source)


# -- region ----------------------------------------------------------------------


@async_test
async def test_frames_outside_the_eu868_band_are_refused_and_never_answered(
    tmp_path: Path,
) -> None:
    """A US915 forwarder's join request at 902.3 MHz and its uplinks are refused as
    wrong_region with no downlink; an EU868 frame still flows."""
    app_key = bytes(range(16))
    devices = [
        abp_device("door", CLIMATE, ADDR),
        otaa_device("o", CLIMATE, "70B3D57ED0000002", app_key),
    ]
    async with rig(tmp_path, devices) as r:
        us = ForwarderEmulator(("127.0.0.1", r.port), "AA555A0000000915", freq=902.3)
        async with us:
            us.send_join("0000000000000000", "70B3D57ED0000002", 7, app_key)
            us.send_phy(_frame(1, 1.0), rssi=-70)
            await r.rejected("wrong_region", 2)
            with pytest.raises(TimeoutError):
                await us.next_downlink(0.5)
        r.gw.send_phy(_frame(2, 2.0))
        (reading,) = await r.readings(1)
    assert reading.meta["freq"] == 868.1 and r.source.counters["downlinks"] == 0
    assert r.source.counters["joins"] == 0


@pytest.mark.parametrize(
    ("freq", "ok"), [(863.0, True), (868.1, True), (870.0, True), (862.9, False), (902.3, False)]
)
def test_eu868_band_edges(freq: float, ok: bool) -> None:
    """863 to 870 MHz inclusive; the refusal says what is allowed."""
    assert region.in_band(freq) is ok
    assert "EU868 only (863-870 MHz)" in region.out_of_band(freq)


# -- the state file -----------------------------------------------------------------


@async_test
async def _one_uplink(state_dir: Path, dev: DeviceConfig) -> None:
    async with rig(state_dir, [dev]) as r:
        r.gw.send_phy(_frame(1, 1.0))
        await r.readings(1)


def test_the_state_file_is_written_owner_only(tmp_path: Path) -> None:
    """Session keys on disk: 0600 whatever the umask, and a file left 0644 is narrowed at start."""
    dev = abp_device("door", CLIMATE, ADDR)
    state = tmp_path / "lorawan-lora.json"
    old = os.umask(0o022)
    try:
        _one_uplink(tmp_path, dev)
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        state.chmod(0o644)  # as an older version left it
        store = SessionStore(state)
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert store.load(dev.options["dev_eui"]) is not None
        store.close()
    finally:
        os.umask(old)
    assert "nwk_s_key" in state.read_text() and not list(tmp_path.glob("*.tmp"))


def _source(
    state_dir: Path, bus: str, devices: list[DeviceConfig], buses: tuple[str, ...] = ()
) -> LoRaWANSource:
    source = build_source(
        BusConfig(name=bus, type="lorawan-udp", options={"port": 1}),
        devices,
        SourceContext(site=SITE, state_dir=state_dir, bus_names=frozenset({bus, *buses})),
    )
    assert isinstance(source, LoRaWANSource)
    return source


@async_test
async def test_a_renamed_bus_warns_about_its_old_state_file(tmp_path: Path) -> None:
    """Bus "lora" renamed "radio": lorawan-lora.json holds its devices' sessions, so the start
    is warned (file, devices, what to do) and counted; unrelated or broken files are not."""
    dev = abp_device("door", CLIMATE, ADDR)
    async with rig(tmp_path, [dev]) as r:
        r.gw.send_phy(_frame(7, 1.0))
        await r.readings(1)
    (tmp_path / "lorawan-other.json").write_text(
        '{"sessions": {"1": {"dev_eui": "0011223344556677"}}}'
    )
    (tmp_path / "lorawan-broken.json").write_text('{"sessions": ')
    with capture_logs() as logs:
        renamed = _source(tmp_path, "radio", [dev])
    assert renamed.rejected == {"state_file_other_bus": 1}
    (warning,) = [e for e in logs if e["event"] == "state_file_other_bus"]
    assert warning["log_level"] == "warning" and warning["file"].endswith("lorawan-lora.json")
    assert warning["devices"] == [dev.options["dev_eui"]]
    assert "rename lorawan-lora.json to lorawan-radio.json" in warning["hint"]
    renamed.store.save(Session(dev.options["dev_eui"], fcnt_up=3))  # "radio" has run since
    with capture_logs() as logs:
        _source(tmp_path, "radio", [dev])
    (warning,) = [e for e in logs if e["event"] == "state_file_other_bus"]
    assert "delete lorawan-lora.json" in warning["hint"]
    # The device moved to "radio" while bus "lora" stays in the config: its file also holds
    # lora's own devices, so it is only noted, never to be renamed or deleted.
    with capture_logs() as logs:
        moved = _source(tmp_path, "radio", [dev], buses=("lora",))
    assert moved.rejected == {} and not [e for e in logs if e["log_level"] == "warning"]
    (note,) = [e for e in logs if e["event"] == "sessions_on_another_bus"]
    assert note["other_bus"] == "lora" and "Keep the file" in note["hint"]
