"""Contract peer for the serial sensor driver: an SDS011 on the master side of a pty.

The driver opens a stable path (a symlink, as udev's ``/dev/serial/by-id``
gives a USB adapter) to the slave side of a pty; the peer writes the
sensor's frames on the master side (shipped profile ``nova/sds011``).
Device fault: a frame with a bad checksum, a counted ``bad_checksum``
rejection. Transport loss: the pty closed and the link removed, as pulling
the USB adapter does (the driver's read fails with ``EIO``, its reopens
find no file); then a new pty at the same path, as replugging does.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from cityedge.drivers.base import Source
from cityedge.drivers.serial import sds011
from cityedge.drivers.serial.driver import build_source
from tests.contract.base import ContractPeer, context
from tests.peers.modbus import Collector
from tests.peers.serialpeer import SensorPort, sensor


def sds_frame(pm25_tenths: int, *, bad_checksum: bool = False) -> bytes:
    """An SDS011 data frame (sensor id 60A1), PM10 twice PM2.5."""
    data = pm25_tenths.to_bytes(2, "little") + (2 * pm25_tenths).to_bytes(2, "little")
    data += b"\xa1\x60"
    chk = (sum(data) + (1 if bad_checksum else 0)) & 0xFF
    return b"\xaa\xc0" + data + bytes([chk, sds011.TAIL])


def rejected(source: Source, reason: str) -> int:
    counts = source.status().get("rejected")
    return int(counts.get(reason, 0)) if isinstance(counts, dict) else 0


class SerialContractPeer(ContractPeer):
    name = "serial-sensor"
    device = "s1"
    clock_synced = False  # a gateway booted without NTP: readings say time_ok=False
    restimulate_s = 0.1

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.port = SensorPort(state_dir)
        self._pm = itertools.count(100)

    async def peer(self) -> AsyncIterator[None]:
        self.port.plug()
        try:
            yield
        finally:
            self.port.unplug()

    def source(self) -> Source:
        bus, dev = sensor(self.port, "nova/sds011", device_id=self.device)
        return build_source(bus, [dev], context(self.state_dir, synced=False))

    async def stimulate(self) -> None:
        self.port.write(sds_frame(next(self._pm) % 10_000))

    async def device_fault(self) -> None:
        self.port.write(sds_frame(999, bad_checksum=True))

    def fault_seen(self, sink: Collector, source: Source) -> bool:
        return rejected(source, "bad_checksum") >= 1

    async def cut(self) -> None:
        self.port.unplug()

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        return any(r.reason == "unreachable" for r in sink.of(self.device, False))

    async def restore(self) -> None:
        self.port.plug()
