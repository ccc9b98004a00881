"""The driver contract, as a peer each driver's tests provide.

A :class:`ContractPeer` owns a real peer for one driver (a pymodbus server,
an asyncua server, a pty, a UDP socket, a fake BLE radio at bleak's callback)
and knows how to build the driver's source for it through the driver's own
``build_source``. The generic tests in ``tests/test_contract.py`` run every
peer through the same five steps.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cityedge.config.model import SiteConfig
from cityedge.drivers.base import Source
from cityedge.sources import SourceContext
from tests.peers.modbus import Collector

SITE = SiteConfig(id="contract", gateway_id="gw-contract", latitude=52.5163, longitude=13.3777)


def context(state_dir: Path, *, synced: bool = True) -> SourceContext:
    """The context a peer builds its source with; ``synced=False``: the clock is not."""
    return SourceContext(SITE, state_dir, clock_ok=None if synced else lambda: False)


class ContractPeer(abc.ABC):
    """One driver and its real peer."""

    name: str = "peer"
    device: str = "dev-1"  # the device whose readings the contract checks
    # Push peers: while the test waits, stimulate again this often, as a
    # device that keeps talking does (a frame sent while the transport is
    # down is lost, as in the field). None: stimulate once (polled buses).
    restimulate_s: float | None = None
    # What the context's clock says; every reading must carry it as time_ok.
    clock_synced: bool = True

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @abc.abstractmethod
    def peer(self) -> AsyncIterator[None]:
        """Start the real peer (an async context manager)."""

    @abc.abstractmethod
    def source(self) -> Source:
        """The driver's source for the peer, built with its build_source."""

    async def stimulate(self) -> None:  # noqa: B027 - polled buses need nothing
        """Make the peer send something (push sources); polled buses need nothing."""

    @abc.abstractmethod
    async def device_fault(self) -> None:
        """Make the device misbehave (exception reply, bad frame, bad status...)."""

    @abc.abstractmethod
    def fault_seen(self, sink: Collector, source: Source) -> bool:
        """The fault arrived as a bad reading or a counted rejection."""

    @abc.abstractmethod
    async def cut(self) -> None:
        """Take the transport away (server stopped, port closed...)."""

    @abc.abstractmethod
    async def restore(self) -> None:
        """Bring the transport back."""

    def loss_seen(self, sink: Collector, source: Source) -> bool:
        """The source noticed the cut (bad readings, ``connected`` false...).

        Not checked by default: some losses are invisible from the driver's
        side (a silent RTU slave times out; a UDP packet forwarder just
        stops sending).
        """
        return True

    def good(self, sink: Collector) -> int:
        return len(sink.of(self.device, True))


@asynccontextmanager
async def started(peer: ContractPeer) -> AsyncIterator[None]:
    async with asynccontextmanager(peer.peer)():
        yield
