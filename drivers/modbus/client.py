"""The Modbus transport: one request of one device in, readings out.

Built on pymodbus 3.16's asyncio clients with its retries (0) and automatic
reconnection (``reconnect_delay=0``) turned off: the bus scheduler owns both.

What pymodbus 3.16 does with replies, and what we add (read from
``pymodbus/transaction/transaction.py`` and ``framer/``):

* Each client serialises its requests with an asyncio lock, so one client
  has one request in flight. For ``max_in_flight > 1`` on TCP we open that
  many connections and lend them out.
* Before each request it clears its receive buffer and makes a fresh
  response future. A reply that arrives when no request waits (ours timed
  out: we cancel it with ``asyncio.wait_for``) is logged and dropped.
* The RTU framer skips frames whose unit id is not the one asked, but it
  does not check the function code or the length: a late reply of the same
  unit arriving inside the next request's window would be taken as its
  reply (``test_late_reply_is_not_taken_for_the_next_one`` reproduces it).
  So on RTU, after a unit times out we do not ask *that unit* again for
  another timeout (:meth:`ModbusClient.ready_at`; the scheduler plans its
  retry then, other units go on meanwhile): a late reply in that window
  finds no request waiting, or one for another unit id, and is dropped.
  We also check every reply's function code and register count
  (:class:`ReplyMismatch`), and keep the line quiet for the inter-frame gap
  measured from the last byte *seen* (expected or not, via pymodbus's
  ``trace_packet`` hook), so a late frame still arriving pushes our next
  request back instead of colliding with it. RTU has no transaction id: a
  reply later than twice the timeout, of the same unit, function and length,
  remains indistinguishable by design.
* On TCP a lost connection does not fail the pending request; it times
  out. After a timeout we look at the connection and raise
  :class:`TransientError` rather than :class:`DeviceTimeout` if it is gone.
* After ``retries + 3`` of *its own* timeouts pymodbus closes a TCP
  connection; our timeouts cancel the request first so that never counts,
  and we raise the limit anyway: one silent unit behind a gateway must not
  drop the connection the other units share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from cityedge.config.model import BusConfig
from cityedge.drivers.base import DecodeError, PolledDriver
from cityedge.drivers.modbus.codec import decode_point
from cityedge.drivers.modbus.plan import ReadRequest, extract
from cityedge.errors import DeviceTimeout, TransientError
from cityedge.readings import Quality, Reading, utc_now

Client = AsyncModbusTcpClient | AsyncModbusSerialClient

# Exception codes of the Modbus application protocol (V1.1b3, section 7).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


@dataclass(frozen=True, slots=True)
class _Write:
    register: str  # coil | holding
    address: int
    words: list[int]


class WriteRefused(Exception):
    """The device answered a write with an exception reply."""


class ReplyMismatch(TransientError):
    """A reply that does not answer the request sent (stale or garbled)."""


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """What the transport needs to know about a device."""

    id: str
    unit_id: int
    timeout_s: float
    cell: str = ""


def rtu_gap_s(bus: BusConfig) -> float:
    """Silence between RTU frames: 3.5 characters (1.75 ms above 19200 baud) + extra."""
    if bus.baudrate > 19200:
        gap = 0.00175
    else:
        bits = 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits
        gap = 3.5 * bits / bus.baudrate
    return gap + bus.inter_frame_gap_s


def describe_exception(code: int | None) -> str:
    """An exception code as a technician reads it: ``exception 11 (gateway target ...)``."""
    name = EXCEPTION_NAMES.get(code) if code is not None else None
    return f"exception {code} ({name})" if name else f"exception {code}"


def bad_readings(
    device: ModbusDevice, request: ReadRequest, reason: str, code: int | None = None
) -> list[Reading]:
    """Bad-quality readings for every point of ``request``."""
    ts = utc_now()
    return [
        Reading(
            device=device.id,
            point=p.name,
            value=None,
            unit=p.unit,
            ts=ts,
            quality=Quality.BAD,
            family=p.family,
            cell=device.cell,
            reason=reason,
            code=code,
        )
        for p in request.points
    ]


def decode_reply(
    device: ModbusDevice, request: ReadRequest, values: Sequence[int]
) -> tuple[list[Reading], int]:
    """Readings from a good reply, and how many points failed to decode."""
    ts = utc_now()
    readings: list[Reading] = []
    rejected = 0
    for point, words in extract(request, values):
        try:
            value = decode_point(point, words)
        except DecodeError as exc:
            rejected += 1
            readings.append(
                Reading(device.id, point.name, None, point.unit, ts, Quality.BAD,
                        point.family, device.cell, reason=exc.reason)
            )  # fmt: skip
            continue
        readings.append(
            Reading(device.id, point.name, value, point.unit, ts, Quality.GOOD,
                    point.family, device.cell)
        )  # fmt: skip
    return readings, rejected


class ModbusClient(PolledDriver[ModbusDevice, ReadRequest]):
    """A Modbus TCP or RTU bus: ``read(device, request)`` -> readings."""

    name = "modbus"

    def __init__(self, bus: BusConfig, *, client_timeout_s: float = 60.0) -> None:
        self.bus = bus
        self.rtu = bus.type == "modbus-rtu"
        self.gap_s = rtu_gap_s(bus) if self.rtu else 0.0
        self.decode_errors = 0
        self._client_timeout_s = client_timeout_s
        self._clients: list[Client] = []
        self._idle: asyncio.Queue[Client] = asyncio.Queue()
        self._quiet_since = 0.0  # monotonic time of the last byte seen or sent
        self._late_until: dict[int, float] = {}  # RTU unit -> end of its late-reply window

    def ready_at(self, unit_id: int) -> float:
        """Monotonic time from which ``unit_id`` may be asked again (RTU late-reply window)."""
        return self._late_until.get(unit_id, 0.0)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        self._quiet_since = time.monotonic()
        return data

    def _make_client(self) -> Client:
        common: dict[str, Any] = {
            "timeout": self._client_timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace if self.rtu else None,
        }
        if self.rtu:
            b = self.bus
            return AsyncModbusSerialClient(
                b.device, baudrate=b.baudrate, bytesize=b.bytesize, parity=b.parity,
                stopbits=b.stopbits, **common,
            )  # fmt: skip
        return AsyncModbusTcpClient(self.bus.host, port=self.bus.port, **common)

    async def open(self) -> None:
        """Connect (``max_in_flight`` connections on TCP, the port on RTU)."""
        await self.close()
        count = 1 if self.rtu else max(1, self.bus.max_in_flight)
        for _ in range(count):
            client = self._make_client()
            client.set_max_no_responses(1 << 30)
            self._clients.append(client)
            try:
                ok = await client.connect()
            except BaseException:
                # Cancelled (or failed) half-way: never leave a socket behind.
                await self.close()
                raise
            if not ok:
                await self.close()
                where = self.bus.device if self.rtu else f"{self.bus.host}:{self.bus.port}"
                raise TransientError(f"cannot open {where}")
            self._idle.put_nowait(client)

    async def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._idle = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return bool(self._clients) and all(c.connected for c in self._clients)

    async def _wait_quiet(self) -> None:
        # The deadline moves if bytes keep arriving, so re-check after sleeping.
        for _ in range(100):
            wait = self._quiet_since + self.gap_s - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _call(
        self, client: Client, device: ModbusDevice, request: ReadRequest | _Write
    ) -> Awaitable[Any]:
        if isinstance(request, _Write):
            if request.register == "coil":
                return client.write_coil(
                    request.address, bool(request.words[0]), device_id=device.unit_id
                )
            return client.write_registers(request.address, request.words, device_id=device.unit_id)
        fn: dict[int, Callable[..., Awaitable[ModbusPDU]]] = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }
        return fn[request.function_code](
            request.start, count=request.count, device_id=device.unit_id
        )

    async def _exchange(
        self, client: Client, device: ModbusDevice, request: ReadRequest | _Write
    ) -> ModbusPDU:
        if not client.connected:
            raise TransientError("connection lost")
        if self.rtu:
            if (wait := self.ready_at(device.unit_id) - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._wait_quiet()
        try:
            reply: ModbusPDU = await asyncio.wait_for(
                self._call(client, device, request), device.timeout_s
            )
            return reply
        except TimeoutError:
            if not client.connected:
                raise TransientError("connection lost") from None
            if self.rtu:
                self._late_until[device.unit_id] = time.monotonic() + device.timeout_s
            raise DeviceTimeout(f"unit {device.unit_id}: no reply in {device.timeout_s}s") from None
        except ConnectionException as exc:
            raise TransientError(str(exc)) from exc
        except ModbusException as exc:
            if not client.connected:
                raise TransientError(str(exc)) from exc
            raise ReplyMismatch(str(exc)) from exc
        finally:
            if self.rtu:
                self._quiet_since = max(self._quiet_since, time.monotonic())

    async def write(
        self, device: ModbusDevice, register: str, address: int, words: list[int]
    ) -> None:
        """Write a coil or holding registers; an exception reply raises WriteRefused."""
        if not self._clients:
            raise TransientError("not open")
        client = await self._idle.get()
        try:
            reply = await self._exchange(client, device, _Write(register, address, words))
        finally:
            self._idle.put_nowait(client)
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            raise WriteRefused(f"unit {device.unit_id} refused the write (exception {code})")

    async def read(self, device: ModbusDevice, request: ReadRequest) -> list[Reading]:
        """Read one request. Exception replies come back as bad readings.

        Raises :class:`DeviceTimeout` when the device does not answer,
        :class:`ReplyMismatch` on a reply to another request and
        :class:`TransientError` when the connection or port is gone.
        """
        if not self._clients:
            raise TransientError("not open")
        client = await self._idle.get()
        try:
            reply = await self._exchange(client, device, request)
        finally:
            self._idle.put_nowait(client)
        return self._readings(device, request, reply)

    def _readings(
        self, device: ModbusDevice, request: ReadRequest, reply: ModbusPDU
    ) -> list[Reading]:
        fc = request.function_code
        if reply.isError():
            if reply.function_code != fc | 0x80:
                raise ReplyMismatch(f"exception reply to function {reply.function_code & 0x7F}")
            return bad_readings(device, request, "modbus_exception", int(reply.exception_code))
        if reply.function_code != fc:
            raise ReplyMismatch(f"function {reply.function_code} in reply to {fc}")
        if fc in (1, 2):
            values: list[int] = [int(b) for b in reply.bits[: request.count]]
            if len(reply.bits) < request.count or len(reply.bits) >= request.count + 8:
                raise ReplyMismatch(f"{len(reply.bits)} bits in reply to {request.count}")
        else:
            values = list(reply.registers)
            if len(values) != request.count:
                raise ReplyMismatch(f"{len(values)} registers in reply to {request.count}")
        readings, rejected = decode_reply(device, request, values)
        self.decode_errors += rejected
        return readings
