"""Contract peer for the LoRaWAN driver: a Semtech UDP packet forwarder on loopback.

The driver is the network-server end of GWMP: a UDP listener on a free
loopback port. The peer is :class:`~cityedge.sim.lora_sim.ForwarderEmulator`
sending real ABP uplinks (encrypted and signed, Cayenne LPP payload, shipped
profile ``cayenne/generic``) with a rising frame counter. Device fault: an
uplink signed with the wrong NwkSKey, a counted ``bad_mic`` rejection.

Transport loss: UDP has no connection, and the listener is the driver's own
socket; nothing outside the process can take it away (the driver's own tests
have no transport-loss case either). What does get lost in the field is the
gateway: the packet forwarder stops (reboot, backhaul down) and a new one
comes back from a new source port. So ``cut`` closes the forwarder's socket
(uplinks in between are lost on the air, as they are) and ``restore``
starts a new forwarder, which must get its PULL_ACK from the driver and
whose uplinks, with the device's counter carried on, must be accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from cityedge.config.model import DeviceConfig
from cityedge.config.profile_loader import load_profile
from cityedge.drivers.base import Source
from cityedge.drivers.lorawan.driver import build_source
from cityedge.sim.lora_sim import ForwarderEmulator, encode_lpp
from tests.contract.base import ContractPeer, context
from tests.contract.serial import rejected
from tests.peers.forwarder import APP, NWK, PROFILES, bus_config, free_udp_port
from tests.peers.modbus import Collector

DEV_ADDR = "26011BDA"
DEV_EUI = "70b3d57ed0000001"
GATEWAY = "AA555A0000000001"


class LoRaWANContractPeer(ContractPeer):
    name = "lorawan-udp"
    device = "climate-1"
    clock_synced = False  # a gateway booted without NTP: readings say time_ok=False
    restimulate_s = 0.2

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.port = free_udp_port()
        self.gw = ForwarderEmulator(("127.0.0.1", self.port), GATEWAY, keepalive_s=0.2)
        self._fcnt = itertools.count(1)

    async def peer(self) -> AsyncIterator[None]:
        # The driver is not listening yet: do not wait for the PULL_ACK here.
        await self.gw.start(wait_s=0)
        try:
            yield
        finally:
            await self.gw.stop()

    def source(self) -> Source:
        profile = load_profile(PROFILES, "cayenne/generic")
        options = {"dev_eui": DEV_EUI, "activation": "abp", "dev_addr": DEV_ADDR.lower(),
                   "nwk_s_key": NWK.hex(), "app_s_key": APP.hex()}  # fmt: skip
        dev = DeviceConfig(id=self.device, bus="lora", profile_name="cayenne/generic",
                           profile=profile, options=options)  # fmt: skip
        bus = bus_config(self.port, silence_s=1.0)  # the forwarder's silence, noticed quickly
        return build_source(bus, [dev], context(self.state_dir, synced=False))

    def _uplink(self, nwk_s_key: bytes) -> None:
        fcnt = next(self._fcnt)
        payload = encode_lpp([(1, "temperature", 20.0 + fcnt / 10), (2, "humidity", 50.0)])
        self.gw.send_uplink(DEV_ADDR, fcnt, 2, payload, nwk_s_key, APP)

    async def stimulate(self) -> None:
        self._uplink(NWK)

    async def device_fault(self) -> None:
        self._uplink(bytes(16))  # a forged or corrupted frame: the MIC does not verify

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return rejected(source, "bad_mic") >= 1

    async def cut(self) -> None:
        await self.gw.stop()

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        """UDP has no connection: the bus notices a forwarder by its silence."""
        silent = source.status()["forwarders"] == "silent"
        return silent and any(r.reason == "unreachable" for r in sink.of(self.device, False))

    async def restore(self) -> None:
        self.gw = ForwarderEmulator(("127.0.0.1", self.port), GATEWAY, keepalive_s=0.2)
        await self.gw.start(wait_s=2.0)
        assert self.gw.pull_acks, "the driver did not answer the new forwarder's PULL_DATA"
