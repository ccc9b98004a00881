"""The BLE transport: a bleak scanner feeding a bounded queue of adverts.

This is the lowest boundary of the BLE driver. Bleak calls
:meth:`AdvertQueue.detection_callback` with a ``BLEDevice`` and an
``AdvertisementData``; the callback keeps only what the driver needs
(:class:`Advert`: MAC, service data, manufacturer data, RSSI, time) and
puts it on a bounded queue. Everything else happens in async code.

Overflow rule: when the queue is full, the **oldest** advert waiting is
dropped and counted (``dropped``), then the new one is queued. Sensors
repeat their adverts, and a newer advert supersedes an older one from the
same tag, so under overload the freshest data is kept.

Passive scanning on BlueZ goes through the advertisement monitor API, which
needs "or patterns": :func:`or_patterns` matches BTHome service data
(16-bit UUID 0xFCD2) and Ruuvi manufacturer data (company 0x0499). It needs
BlueZ >= 5.56 started with ``--experimental`` and Linux >= 5.10; where it is
missing, :func:`is_passive_unsupported` recognises bleak's error so the
driver can fall back to active scanning.

Tests replace the OS backend only (bleak's own ``backend=`` argument), so
the real :class:`bleak.BleakScanner`, the real BlueZ advert handling and the
real callback path run; see ``tests/peers/ble.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from cityedge.drivers.ble.bthome import UUID16
from cityedge.drivers.ble.ruuvi import COMPANY_ID

ScanMode = Literal["passive", "active"]
DEFAULT_QUEUE_SIZE = 1024

DetectionCallback = Callable[[BLEDevice, AdvertisementData], None]


@dataclass(frozen=True, slots=True)
class Advert:
    """What the driver keeps of one advertisement event."""

    mac: str  # upper case, colon separated
    service_data: dict[str, bytes]
    manufacturer_data: dict[int, bytes]
    rssi: int
    ts: datetime  # UTC, when the callback ran
    mono: float  # time.monotonic() then, for de-duplication windows


@dataclass(frozen=True, slots=True)
class ScanSettings:
    adapter: str = "hci0"
    mode: ScanMode = "passive"


class Scanner(Protocol):
    """What the driver needs of a scanner: bleak's BleakScanner has these."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ScannerFactory(Protocol):
    """Builds a scanner that calls ``callback`` for every advert it hears."""

    def __call__(self, settings: ScanSettings, callback: DetectionCallback) -> Scanner: ...


def or_patterns() -> list[OrPattern]:
    """BlueZ advertisement-monitor patterns for the adverts the codecs read."""
    return [
        OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, UUID16),
        OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA,
                  COMPANY_ID.to_bytes(2, "little")),
    ]  # fmt: skip


def bleak_scanner(
    settings: ScanSettings, callback: DetectionCallback, **kwargs: Any
) -> BleakScanner:
    """The production scanner. ``kwargs`` go to BleakScanner (tests pass ``backend=``)."""
    if settings.mode == "passive":
        bluez = {"adapter": settings.adapter, "or_patterns": or_patterns()}
    else:
        bluez = {"adapter": settings.adapter}
    return BleakScanner(
        callback,
        scanning_mode=settings.mode,
        bluez=bluez,  # type: ignore[arg-type]  # a TypedDict built conditionally
        **kwargs,
    )


def is_passive_unsupported(exc: BaseException) -> bool:
    """Bleak's way of saying this OS or BlueZ cannot scan passively.

    Bleak names passive scanning in its own errors (BlueZ too old or without
    ``--experimental``, macOS); an ``org.bluez.Error`` from the advertisement
    monitor calls means the same (BlueZ answered, the adapter exists). No
    D-Bus, no BlueZ (``org.freedesktop.DBus.Error.ServiceUnknown``) or no
    adapter is not this: those fail active scanning as well.
    """
    if not isinstance(exc, BleakError) or isinstance(exc, BleakBluetoothNotAvailableError):
        return False
    if isinstance(exc, BleakDBusError):
        return exc.dbus_error.startswith("org.bluez.")
    return "passive" in str(exc).lower()


class AdvertQueue:
    """Bounded hand-over from bleak's callback to the driver (see module doc)."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        self.maxsize = maxsize
        self._queue: asyncio.Queue[Advert] = asyncio.Queue(maxsize)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.received = 0
        self.dropped = 0

    def detection_callback(self, device: BLEDevice, data: AdvertisementData) -> None:
        """Bleak's detection callback: copy what we need, queue it, return."""
        advert = Advert(
            mac=device.address.upper(),
            service_data=dict(data.service_data),
            manufacturer_data=dict(data.manufacturer_data),
            rssi=data.rssi,
            ts=datetime.now(UTC),
            mono=time.monotonic(),
        )
        if threading.get_ident() == self._loop_thread:
            self.put(advert)
        else:  # CoreBluetooth and WinRT call back on their own threads
            self._loop.call_soon_threadsafe(self.put, advert)

    def put(self, advert: Advert) -> None:
        """Queue an advert; when full, drop the oldest waiting one (counted)."""
        self.received += 1
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(advert)

    async def get(self) -> Advert:
        return await self._queue.get()

    def qsize(self) -> int:
        return self._queue.qsize()
