"""LoRaWAN peers for tests: the driver on a free loopback UDP port and forwarder emulators."""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cityedge.config.model import BusConfig, DeviceConfig, SiteConfig
from cityedge.drivers.lorawan.driver import LoRaWANSource, build_source
from cityedge.profiles import FieldMap, Profile
from cityedge.sim.lora_sim import ForwarderEmulator
from cityedge.sources import SourceContext
from tests.peers.modbus import Collector, running

PROFILES = Path(__file__).resolve().parents[2] / "firmware-profiles"

SITE = SiteConfig(id="site", gateway_id="gw-1", latitude=52.52, longitude=13.405)
NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lora_profile(codec: str, fields: Sequence[tuple[str, str]] | Sequence[FieldMap]) -> Profile:
    """A LoRaWAN profile; fields as (key, point name) pairs or FieldMaps."""
    maps = tuple(
        replace(f, family="environment") if isinstance(f, FieldMap)
        else FieldMap(key=f[0], name=f[1], family="environment")
        for f in fields
    )  # fmt: skip
    return Profile(name="test/lora", vendor="test", model="lora", family="environment",
                   protocol="lorawan", codec=codec, fields=maps)  # fmt: skip


def abp_device(
    dev_id: str, profile: Profile, dev_addr: str, nwk: bytes = NWK, app: bytes = APP, **opts: Any
) -> DeviceConfig:
    options = {"dev_eui": f"70b3d5{zlib.crc32(dev_id.encode()):08x}00", "activation": "abp",
               "dev_addr": dev_addr.lower(), "nwk_s_key": nwk.hex(), "app_s_key": app.hex(),
               **opts}  # fmt: skip
    return DeviceConfig(id=dev_id, bus="lora", profile_name=profile.name, profile=profile,
                        options=options)  # fmt: skip


def otaa_device(dev_id: str, profile: Profile, dev_eui: str, app_key: bytes) -> DeviceConfig:
    options = {"dev_eui": dev_eui.lower(), "activation": "otaa", "app_key": app_key.hex()}
    return DeviceConfig(id=dev_id, bus="lora", profile_name=profile.name, profile=profile,
                        options=options)  # fmt: skip


def bus_config(port: int, **opts: Any) -> BusConfig:
    return BusConfig(name="lora", type="lorawan-udp", options={"port": port, **opts})


def make_source(
    state_dir: Path, devices: Sequence[DeviceConfig], port: int, **opts: Any
) -> LoRaWANSource:
    ctx = SourceContext(site=SITE, state_dir=state_dir)
    source = build_source(bus_config(port, **opts), devices, ctx)
    assert isinstance(source, LoRaWANSource)
    return source


async def until(check: Callable[[], bool], within_s: float = 3.0) -> None:
    """Poll ``check`` every 10 ms, at most ``within_s``; fail if it never holds."""
    for _ in range(max(1, int(within_s / 0.01))):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check(), "condition not reached in time"


@dataclass
class Rig:
    """A running driver, its sink and one forwarder emulator pointed at it."""

    source: LoRaWANSource
    sink: Collector
    gw: ForwarderEmulator
    port: int

    async def readings(self, n: int, within_s: float = 3.0) -> list[Any]:
        await self.sink.wait_for(lambda: len(self.sink.readings) >= n, within_s)
        return self.sink.readings

    async def rejected(self, reason: str, n: int = 1, within_s: float = 3.0) -> None:
        """Wait until ``reason`` has been counted ``n`` times."""
        await until(lambda: self.source.rejected.get(reason, 0) >= n, within_s)


@asynccontextmanager
async def rig(
    state_dir: Path,
    devices: Sequence[DeviceConfig],
    gateway_eui: str = "AA555A0000000001",
    dedupe_s: float = 0.1,
    **opts: Any,
) -> AsyncIterator[Rig]:
    """The driver on a free port, running into a Collector, and a started emulator."""
    port = free_udp_port()
    source = make_source(state_dir, devices, port, **opts)
    source.dedupe_s = dedupe_s
    sink = Collector()
    async with running(source, sink):
        for _ in range(200):  # bounded: the listener opens within a second
            if source.connected:
                break
            await asyncio.sleep(0.005)
        async with ForwarderEmulator(("127.0.0.1", port), gateway_eui) as gw:
            yield Rig(source, sink, gw, port)
