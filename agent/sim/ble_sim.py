"""Simulated BLE sensor tags replayed through bleak's own scanner, for the demo.

:class:`FakeBlueZScanner` is bleak's BlueZ scanner backend
(``BleakScannerBlueZDBus``) with only its D-Bus part replaced: ``start`` and
``stop`` register with an :class:`Air` instead of calling BlueZ, and each
advert is handed to bleak's own ``_handle_advertising_data`` as the
``org.bluez.Device1`` properties BlueZ would send. Bleak builds the real
``AdvertisementData`` and ``BLEDevice`` and calls the real detection
callback. :meth:`Air.factory` is the BLE driver's production
:func:`~cityedge.drivers.ble.scanner.bleak_scanner` with bleak's
``backend=`` argument pointing here, so everything from ``BleakScanner``
up is the code that runs on a gateway. The demo and the tests share it (the
tests add faults with :meth:`Air.refuse`).

Tags (:class:`SimTag`) advertise on their own interval with values that
move: a RuuviTag (RAWv2, data format 5) and BTHome v2 sensors, plain or
AES-CCM encrypted with a bind key (:func:`cityedge.drivers.ble.bthome.encrypt`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.backends.scanner import AdvertisementDataCallback

from cityedge.drivers.ble import bthome, ruuvi
from cityedge.drivers.ble.scanner import ScannerFactory, bleak_scanner

Mode = Literal["active", "passive"]
Kind = Literal["ruuvi", "bthome"]


def ruuvi_rawv2(
    mac: str, temperature: float, humidity: float, pressure_pa: int,
    accel_mg: tuple[int, int, int], battery_mv: int, movement: int, sequence: int,
) -> bytes:  # fmt: skip
    """RuuviTag data format 5 manufacturer data (without the company id)."""
    power = ((battery_mv - 1600) << 5) | ((4 + 40) // 2)  # +4 dBm
    return struct.pack(
        ">BhHHhhhHBH6s",
        ruuvi.DATA_FORMAT,
        round(temperature / 0.005),
        round(humidity / 0.0025),
        pressure_pa - 50000,
        *accel_mg,
        power,
        movement & 0xFF,
        sequence & 0xFFFF,
        bytes.fromhex(mac.replace(":", "")),
    )


def bthome_objects(packet_id: int, battery: int, temperature: float, humidity: int) -> bytes:
    """BTHome v2 objects as a Shelly BLU H&T sends them (ids in ascending order)."""
    return (
        bytes((0x00, packet_id & 0xFF, 0x01, battery))
        + b"\x2e" + bytes((humidity,))
        + b"\x45" + struct.pack("<h", round(temperature * 10))
    )  # fmt: skip


@dataclass
class SimTag:
    """One tag: its MAC, format, interval and (for encrypted BTHome) bind key."""

    mac: str
    kind: Kind
    every_s: float = 2.0
    bind_key: bytes | None = None
    base_temp: float = 12.0
    rssi: int = -70
    name: str | None = None
    seq: int = 0
    counter: int = field(default_factory=lambda: int(time.time()))  # rises across restarts
    rng: random.Random = field(default_factory=random.Random)

    def advert(self, t: float) -> tuple[dict[str, bytes], dict[int, bytes]]:
        """(service data, manufacturer data) of the next advert at ``t`` seconds."""
        self.seq += 1
        temp = self.base_temp + 3 * math.sin(t / 120) + self.rng.gauss(0, 0.05)
        hum = 60 - 10 * math.sin(t / 120) + self.rng.gauss(0, 0.3)
        if self.kind == "ruuvi":
            accel = (self.rng.randint(-20, 20), self.rng.randint(-20, 20), 1000)
            raw = ruuvi_rawv2(self.mac, temp, hum, 101325 + self.rng.randint(-30, 30), accel,
                              2950, self.seq // 50, self.seq)  # fmt: skip
            return {}, {ruuvi.COMPANY_ID: raw}
        objects = bthome_objects(self.seq, 93, temp, round(hum))
        if self.bind_key is None:
            return {bthome.SERVICE_UUID: bytes((bthome.VERSION << 5,)) + objects}, {}
        self.counter += 1
        sealed = bthome.encrypt(objects, self.mac, self.bind_key, self.counter)
        return {bthome.SERVICE_UUID: sealed}, {}


class Air:
    """The radio space: fake BlueZ scanners listen, adverts are delivered to them.

    ``refuse`` makes the next starts in a mode fail (an adapter that is gone, a
    BlueZ without passive scanning), so tests can drive the driver's fault paths
    through the same code the demo uses.
    """

    def __init__(self) -> None:
        self.scanners: list[FakeBlueZScanner] = []
        self.starts: list[tuple[str, str | None, Any]] = []  # (mode, adapter, or_patterns)
        self.fail: dict[str, list[BaseException]] = {"passive": [], "active": []}

    def factory(self) -> ScannerFactory:
        """The scanner factory to give the BLE driver (``build_source(scanner_factory=)``)."""
        return functools.partial(bleak_scanner, backend=FakeBlueZScanner, air=self)

    def refuse(self, mode: Mode, *errors: BaseException) -> None:
        """The next starts in ``mode`` raise these, in order."""
        self.fail[mode].extend(errors)

    def advertise(
        self,
        mac: str,
        *,
        service_data: dict[str, bytes] | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        rssi: int = -60,
        name: str | None = None,
    ) -> int:
        """Hand one advert to every listening scanner as BlueZ would; returns how many."""
        for scanner in list(self.scanners):
            adapter = scanner._adapter or "hci0"
            path = f"/org/bluez/{adapter}/dev_{mac.replace(':', '_')}"
            props: dict[str, Any] = {
                "Address": mac,
                "AddressType": "public",
                "Alias": name or mac.replace(":", "-"),
                "RSSI": rssi,
                "UUIDs": list((service_data or {}).keys()),
                "ServiceData": dict(service_data or {}),
                "ManufacturerData": dict(manufacturer_data or {}),
            }
            if name is not None:
                props["Name"] = name
            scanner._handle_advertising_data(path, props)  # type: ignore[arg-type]
        return len(self.scanners)


class FakeBlueZScanner(BleakScannerBlueZDBus):
    """bleak's BlueZ scanner, listening to an :class:`Air` instead of D-Bus."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Mode,
        *,
        bluez: BlueZScannerArgs,
        air: Air,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids, scanning_mode, bluez=bluez, **kwargs)
        self._air = air

    async def start(self) -> None:
        self._air.starts.append((self._scanning_mode, self._adapter, self._or_patterns))
        errors = self._air.fail[self._scanning_mode]
        if errors:
            raise errors.pop(0)
        self.seen_devices = {}
        self._air.scanners.append(self)

    async def stop(self) -> None:
        if self in self._air.scanners:
            self._air.scanners.remove(self)


class BleSim:
    """Simulated tags advertising into an :class:`Air` on their own intervals (the demo)."""

    def __init__(self, tags: list[SimTag]) -> None:
        self.tags = tags
        self.air = Air()
        self.adverts = 0
        self._task: asyncio.Task[None] | None = None

    def factory(self) -> ScannerFactory:
        """The scanner factory to give the BLE driver (``build_source(scanner_factory=)``)."""
        return self.air.factory()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ble-sim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        t0 = time.monotonic()
        due = {tag.mac: t0 + i * 0.3 for i, tag in enumerate(self.tags)}
        while True:
            now = time.monotonic()
            for tag in self.tags:
                if now >= due[tag.mac]:
                    due[tag.mac] = now + tag.every_s
                    service, manufacturer = tag.advert(now - t0)
                    rssi = tag.rssi + tag.rng.randint(-4, 4)
                    self.adverts += self.air.advertise(
                        tag.mac, service_data=service, manufacturer_data=manufacturer,
                        rssi=rssi, name=tag.name,
                    )  # fmt: skip
            await asyncio.sleep(0.1)
