"""OPC UA (asyncua): subscriptions or polling, security, discovery, writes.

``build_source`` is what :mod:`cityedge.sources` calls for a bus of type
``opcua``; :func:`list_endpoints` and :func:`browse` are for technicians
(``cityedge opcua endpoints|browse``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.opcua.certs import UntrustedServer, ensure_identity, thumbprint
from cityedge.drivers.opcua.client import SecurityMismatch, Settings
from cityedge.drivers.opcua.codec import (
    StatusInfo,
    WriteError,
    encode_write,
    engineering_value,
    monitoring_filter,
    parse_key,
    quality_of,
    status_name,
)
from cityedge.drivers.opcua.discover import browse, list_endpoints
from cityedge.drivers.opcua.source import OpcUaSource, WriteRefused

if TYPE_CHECKING:
    from cityedge.sources import SourceContext

__all__ = [
    "OpcUaSource",
    "SecurityMismatch",
    "Settings",
    "StatusInfo",
    "UntrustedServer",
    "WriteError",
    "WriteRefused",
    "browse",
    "build_source",
    "encode_write",
    "engineering_value",
    "ensure_identity",
    "list_endpoints",
    "monitoring_filter",
    "parse_key",
    "quality_of",
    "status_name",
    "thumbprint",
]


def build_source(
    bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext
) -> OpcUaSource:
    """The source of one OPC UA server (see cityedge.sources)."""
    settings = Settings.from_options(
        str(bus.options["endpoint"]),
        bus.options,
        state_dir=ctx.state_dir,
        timeout_s=bus.timeout_s,
        gateway_id=ctx.site.gateway_id,
    )
    problems = settings.check()
    if problems:
        raise ValueError(f"bus {bus.name!r}: " + "; ".join(problems))
    return OpcUaSource(bus, [(d, ctx.cell_for(d)) for d in devices], settings,
                       clock_ok=ctx.clock_ok)  # fmt: skip
