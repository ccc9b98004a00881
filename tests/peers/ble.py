"""A BLE "air" for tests: bleak's own BlueZ backend with the D-Bus part replaced.

:class:`FakeBlueZScanner` is bleak's ``BleakScannerBlueZDBus`` whose
``start``/``stop`` register with an :class:`Air` instead of calling BlueZ
over D-Bus. :meth:`Air.advertise` hands each listening scanner the
``org.bluez.Device1`` properties BlueZ would send, through bleak's own
``_handle_advertising_data``: bleak builds the real ``AdvertisementData``
and ``BLEDevice`` and calls the real detection callback. The driver is
given ``Air.factory()``, i.e. the production :func:`bleak_scanner` with
bleak's ``backend=`` argument pointing here, so everything from
``BleakScanner`` up is the real code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.backends.scanner import AdvertisementDataCallback

from cityedge.drivers.ble.scanner import ScannerFactory, bleak_scanner

Mode = Literal["active", "passive"]


class Air:
    """The radio space fake scanners listen to; set ``fail`` to refuse starts."""

    def __init__(self) -> None:
        self.scanners: list[FakeBlueZScanner] = []
        self.starts: list[tuple[str, str | None, Any]] = []  # (mode, adapter, or_patterns)
        self.fail: dict[str, list[BaseException]] = {"passive": [], "active": []}

    def factory(self) -> ScannerFactory:
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
        """Deliver one advert to every listening scanner; returns how many heard it."""
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


@pytest.fixture(name="air")
def air_fixture() -> Iterator[Air]:
    """A fresh radio space; fails the test if a scanner is left listening."""
    space = Air()
    yield space
    assert not space.scanners, "a scanner was left started"
