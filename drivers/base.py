"""The contract every field driver implements.

There are two kinds of source, as in the field:

* **Polled** buses (Modbus, OPC UA polling): the agent decides when to ask.
  A polled driver answers :meth:`PolledDriver.read` for one device and a set
  of points and returns readings; it never sleeps between polls itself.
* **Push** sources (OPC UA subscriptions, LoRaWAN uplinks, BLE adverts,
  serial streams): the device decides when to speak. A push driver yields
  readings from :meth:`PushDriver.stream` as they arrive.

Either way a driver is an async context manager: ``__aenter__`` opens the
transport (and may raise :class:`~cityedge.errors.TransientError`),
``__aexit__`` closes it and leaves no task or thread behind.

Rules every driver follows:

1. A *device fault* (an exception reply, a bad status code, a checksum
   error in a frame from a device) is data, not an exception: return a
   :class:`~cityedge.readings.Reading` with ``Quality.BAD``, a ``reason`` and,
   where the protocol has one, a ``code``.
2. A *transport failure* (socket closed, port gone) raises
   :class:`~cityedge.errors.TransientError`, or ends the source's session
   with its reason. The driver does not reconnect on its own: every source
   runs its sessions under :func:`supervise`, which backs off and re-enters.
3. Bytes from a device are untrusted. Decoders are pure functions that
   raise :class:`DecodeError` on anything malformed; the driver counts and
   logs the rejection and keeps going.
4. Callbacks from libraries (paho, bleak, asyncua) only hand data to a
   bounded queue; everything else stays in async code.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Generic, NoReturn, Protocol, Self, TypeVar

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import DeviceConfig
from cityedge.readings import Quality, Reading, utc_now

DeviceT = TypeVar("DeviceT")
RequestT = TypeVar("RequestT")

_log = structlog.get_logger()

ReadingSink = Callable[[Sequence[Reading]], Awaitable[None]]
"""Where a source hands its readings: awaits until they are queued."""


class DecodeError(ValueError):
    """Bytes from a device or peer did not decode. ``reason`` is a short slug."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Driver(abc.ABC):
    """Base of every driver: an async context manager around a transport."""

    name: str = "driver"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the transport. Raises TransientError if it cannot yet."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the transport; idempotent; leaves no task or thread running."""


class PolledDriver(Driver, Generic[DeviceT, RequestT]):
    """A bus the agent polls."""

    @abc.abstractmethod
    async def read(self, device: DeviceT, request: RequestT) -> Sequence[Reading]:
        """Read one request of one device. Device faults come back as bad readings."""


class PushDriver(Driver):
    """A source that speaks when it wants to."""

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[Reading]:
        """Yield readings as they arrive, until closed."""


class Source(abc.ABC):
    """What the agent supervises: runs until cancelled, feeding a sink.

    A polled bus's scheduler and a push driver's pump are both sources.
    ``name`` is ``"<kind>:<bus name>"`` (``modbus:rs485``): the agent finds a
    bus's source by it. ``status()`` is what ``cityedge status`` shows for it.
    """

    name: str = "source"

    @abc.abstractmethod
    async def run(self, sink: ReadingSink) -> None:
        """Run until cancelled. Must not raise on device or transport faults."""

    def status(self) -> dict[str, object]:
        return {}


async def supervise(
    session: Callable[[], Awaitable[str | None]],
    backoff: Backoff,
    lost: Callable[[str], Awaitable[None]],
) -> NoReturn:
    """The one reconnect loop of every source: run sessions until cancelled.

    A session opens its transport, calls ``backoff.reset()`` once it is up,
    serves until the transport is lost and returns why (a short text), or
    None to be restarted at once (not a failure: a scanner restarted after
    silence). After a loss, ``lost(reason)`` reports it (counters, bad-quality
    readings, a log line) and the next session waits for the backoff's delay
    (exponential, full jitter). Failure stays inside the source: nothing here
    raises but cancellation.
    """
    while True:
        reason = await session()
        if reason is None:
            continue
        try:
            await lost(reason)
        except Exception:  # reporting failed (a full disk under the sink): reconnect anyway
            _log.exception("loss_report_failed", reason=reason)
        await asyncio.sleep(backoff.next_delay())


class Reportable(Protocol):
    """A device record a push source keeps: its config, cell and whether it is down."""

    config: DeviceConfig
    cell: str
    down: bool


def newly_unreachable(devices: Iterable[Reportable]) -> list[Reading]:
    """One bad reading per field, reason ``unreachable``, for every device not yet
    reported down; all are marked down. What a push source sends when the path to
    its devices is gone (a broker, a silent packet forwarder): once per outage."""
    now = utc_now()
    out = []
    for dev in devices:
        if not dev.down:
            for fm in dev.config.profile.fields:
                out.append(Reading(dev.config.id, fm.name, None, fm.unit, now, Quality.BAD,
                                   fm.family, dev.cell, "unreachable"))  # fmt: skip
        dev.down = True
    return out
