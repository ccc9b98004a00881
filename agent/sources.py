"""From config to running sources: one per bus, built by its driver.

Each bus type names the function that builds its source, imported only when
a bus of that type is configured (so a box without BLE never imports bleak).
A driver's ``build_source(bus, devices, ctx)`` returns a
:class:`~cityedge.drivers.base.Source`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cityedge.config.model import BusConfig, Config, DeviceConfig, SiteConfig
from cityedge.drivers.base import Source
from cityedge.grid import cell_id

FACTORIES: dict[str, str] = {
    "modbus-tcp": "cityedge.drivers.modbus:build_source",
    "modbus-rtu": "cityedge.drivers.modbus:build_source",
    "opcua": "cityedge.drivers.opcua:build_source",
    "serial-sensor": "cityedge.drivers.serial.driver:build_source",
    "lorawan-udp": "cityedge.drivers.lorawan.driver:build_source",
    "chirpstack-mqtt": "cityedge.drivers.lorawan.chirpstack:build_source",
    "ble": "cityedge.drivers.ble.driver:build_source",
}


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What every driver may need beyond its bus and devices."""

    site: SiteConfig
    state_dir: Path  # persistent small state (TinyDB files, certificates)
    clock_ok: Callable[[], bool] | None = None  # False while the clock is not synced
    bus_names: frozenset[str] = frozenset()  # every bus of the config (state files of others)

    def cell_for(self, device: DeviceConfig) -> str:
        lat = device.latitude if device.latitude is not None else self.site.latitude
        lon = device.longitude if device.longitude is not None else self.site.longitude
        return cell_id(lat, lon, self.site.cell_size_m)


class SourceFactory(Protocol):
    def __call__(
        self, bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext
    ) -> Source: ...


def factory(bus_type: str) -> SourceFactory:
    module, _, name = FACTORIES[bus_type].partition(":")
    built: SourceFactory = getattr(importlib.import_module(module), name)
    return built


def build_sources(config: Config, ctx: SourceContext) -> list[Source]:
    """One source per bus that has devices."""
    sources: list[Source] = []
    for name, bus in config.buses.items():
        devices = [d for d in config.devices if d.bus == name]
        if devices:
            sources.append(factory(bus.type)(bus, devices, ctx))
    return sources
