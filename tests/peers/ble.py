"""A BLE "air" for tests: the package's fake BlueZ scanner (:mod:`cityedge.sim.ble_sim`).

:class:`Air` hands each listening :class:`FakeBlueZScanner` (bleak's own
``BleakScannerBlueZDBus`` with the D-Bus part replaced) the
``org.bluez.Device1`` properties BlueZ would send, through bleak's own
``_handle_advertising_data``: bleak builds the real ``AdvertisementData`` and
``BLEDevice`` and calls the real detection callback. The demo runs the same
code; tests add faults with :meth:`Air.refuse`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cityedge.sim.ble_sim import Air, FakeBlueZScanner

__all__ = ["Air", "FakeBlueZScanner", "air_fixture"]


@pytest.fixture(name="air")
def air_fixture() -> Iterator[Air]:
    """A fresh radio space; fails the test if a scanner is left listening."""
    space = Air()
    yield space
    assert not space.scanners, "a scanner was left started"
