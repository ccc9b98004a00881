"""Contract peer for the BLE driver: the fake radio at bleak's lowest boundary.

The source is built by ``build_source`` with the test's scanner factory
(the production ``bleak_scanner`` with bleak's ``backend=`` pointing at
:class:`~cityedge.sim.ble_sim.FakeBlueZScanner`), so bleak's own BlueZ advert
handling and the real detection callback run. The peer advertises a Shelly
BLU H&T (shipped profile ``shelly/blu-ht``, BTHome v2, a new packet id each
time). Device fault: a truncated BTHome advert, a counted ``truncated``
rejection.

Transport loss: the adapter unplugged. Adverts stop without an error (as
with BlueZ), and every scanner start fails as bleak's BlueZ backend fails
for a missing adapter (``BleakError("adapter 'hci0' not found")``) until it
is plugged back. The driver notices only by silence, after
``silence_restart_s`` (600 s in production, 0.3 s here).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from bleak.exc import BleakError

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.base import Source
from cityedge.drivers.ble import bthome
from cityedge.drivers.ble.driver import build_source
from tests.contract.base import ContractPeer, context
from tests.contract.serial import rejected
from tests.peers.ble import Air
from tests.peers.forwarder import PROFILES
from tests.peers.modbus import Collector

MAC = "A4:C1:38:00:11:22"
BTHOME_UUID = bthome.SERVICE_UUID
REFUSALS = 1000  # more scanner starts than any test makes while unplugged


class BleContractPeer(ContractPeer):
    name = "ble"
    device = "ht-1"
    clock_synced = False  # a gateway booted without NTP: readings say time_ok=False
    restimulate_s = 0.1

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.air = Air()
        self._packet = itertools.count(1)

    async def peer(self) -> AsyncIterator[None]:
        yield  # the air needs no starting; the adapter is "plugged in"
        assert not self.air.scanners, "a scanner was left started"

    def source(self) -> Source:
        profile = load_profile(PROFILES, "shelly/blu-ht")
        dev = DeviceConfig(id=self.device, bus="ble0", profile_name="shelly/blu-ht",
                           profile=profile, options={"mac": MAC})  # fmt: skip
        bus = BusConfig(name="ble0", type="ble", options={"adapter": "hci0"})
        return build_source(bus, [dev], context(self.state_dir, synced=False),
                            scanner_factory=self.air.factory(), silence_restart_s=0.3)  # fmt: skip

    def _advertise(self, payload: bytes) -> None:
        self.air.advertise(MAC, service_data={BTHOME_UUID: payload}, rssi=-70)

    async def stimulate(self) -> None:
        n = next(self._packet)
        # BTHome v2 plain: packet id, battery 100 %, humidity 55 %, temperature (0.1 Cel)
        objects = bytes([0x00, n % 256, 0x01, 100, 0x2E, 55, 0x45])
        self._advertise(b"\x40" + objects + (200 + n % 100).to_bytes(2, "little", signed=True))

    async def device_fault(self) -> None:
        self._advertise(bytes.fromhex("4002ca"))  # a temperature object cut short

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return rejected(source, "truncated") >= 1

    async def cut(self) -> None:
        for mode in ("passive", "active"):
            self.air.fail[mode][:] = [BleakError("adapter 'hci0' not found")] * REFUSALS
        self.air.scanners.clear()  # the adverts stop; the scanner's stop() finds nothing

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        return any(r.reason == "no_adapter" for r in sink.of(self.device, False))

    async def restore(self) -> None:
        for refusals in self.air.fail.values():
            refusals.clear()
