"""``cityedge scan``: which Modbus RTU unit ids answer on a serial port, at which baud rate.

For each baud rate, each unit id is asked for one register (holding 0 by
default) with a short timeout. Any reply counts as "present": registers, an
exception reply (the unit exists but does not have that register; very
common), or a well-formed frame from that unit that does not match the
request. Silence is "absent". At a wrong baud rate replies arrive garbled,
fail their CRC and are dropped, so they look like silence.

The probes go through the agent's own RTU transport
(:class:`cityedge.drivers.modbus.ModbusClient`): the inter-frame gap is kept
and a late reply is never taken for the next unit's. Scan a line the agent is
not polling (stop the agent, or use ``cityedge read`` on a running one): two
masters on one RS-485 line collide.

    result = await scan_rtu("/dev/ttyUSB0", units=range(1, 248),
                            baudrates=(9600, 19200), progress=draw_bar)
    print(render_scan(result))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cityedge.config.model import BusConfig
from cityedge.drivers.modbus.client import ModbusClient, ModbusDevice, ReplyMismatch
from cityedge.drivers.modbus.plan import ReadRequest
from cityedge.errors import DeviceTimeout
from cityedge.profiles import Point

ALL_UNITS = range(1, 248)
COMMON_BAUDRATES = (9600, 19200, 38400, 4800, 57600, 115200, 2400)

# Called after each probe: (probes done, probes in all, baud rate, unit id).
Progress = Callable[[int, int, int, int], None]


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A unit that answered."""

    unit_id: int
    baudrate: int
    answer: Literal["registers", "exception", "mismatch"]
    latency_ms: float
    value: int | None = None  # the register's raw word, for "registers"
    code: int | None = None  # the exception code, for "exception"


@dataclass(slots=True)
class ScanResult:
    port: str
    register: str
    address: int
    baudrates: list[int]
    probes: int = 0
    elapsed_s: float = 0.0
    hits: list[ScanHit] = field(default_factory=list)

    def units(self, baudrate: int | None = None) -> list[int]:
        """The unit ids that answered (at ``baudrate``, or at any)."""
        return sorted({h.unit_id for h in self.hits if baudrate in (None, h.baudrate)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "register": self.register,
            "address": self.address,
            "baudrates": self.baudrates,
            "probes": self.probes,
            "elapsed_s": round(self.elapsed_s, 2),
            "found": [asdict(h) for h in self.hits],
        }


def parse_units(text: str) -> list[int]:
    """``"1-10,17,200-247"`` -> unit ids; ValueError names what is wrong."""
    units: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"unit ids are numbers or ranges like 1-247 (got {part!r})")
        first, last = int(lo), int(hi or lo)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"unit ids run from 1 to 247 (got {part!r})")
        units.update(range(first, last + 1))
    if not units:
        raise ValueError("no unit ids given")
    return sorted(units)


async def _probe(
    client: ModbusClient, unit: int, request: ReadRequest, timeout_s: float, baudrate: int
) -> ScanHit | None:
    target = ModbusDevice(f"unit-{unit}", unit, timeout_s)
    started = time.monotonic()
    try:
        readings = await client.read(target, request)
    except DeviceTimeout:
        return None
    except ReplyMismatch:
        ms = (time.monotonic() - started) * 1000
        return ScanHit(unit, baudrate, "mismatch", round(ms, 1))
    ms = round((time.monotonic() - started) * 1000, 1)
    reading = readings[0]
    if reading.reason == "modbus_exception":
        return ScanHit(unit, baudrate, "exception", ms, code=reading.code)
    value = reading.value if isinstance(reading.value, int) else None
    return ScanHit(unit, baudrate, "registers", ms, value=value)


async def scan_rtu(
    port: str,
    *,
    units: Iterable[int] = ALL_UNITS,
    baudrates: Sequence[int] = (9600, 19200),
    parity: Literal["N", "E", "O"] = "N",
    stopbits: int = 1,
    register: Literal["holding", "input"] = "holding",
    address: int = 0,
    timeout_s: float = 0.1,
    progress: Progress | None = None,
) -> ScanResult:
    """Probe every unit id at every baud rate; raises TransientError if the port fails."""
    unit_list = list(units)
    point = Point("probe", register, address, "uint16")
    request = ReadRequest(register, address, 1, (point,))
    result = ScanResult(port, register, address, list(baudrates))
    total = len(unit_list) * len(baudrates)
    started = time.monotonic()
    for baudrate in baudrates:
        bus = BusConfig(name="scan", type="modbus-rtu", device=port, baudrate=baudrate,
                        parity=parity, stopbits=stopbits, timeout_s=timeout_s)  # fmt: skip
        client = ModbusClient(bus)
        await client.open()
        try:
            for unit in unit_list:
                hit = await _probe(client, unit, request, timeout_s, baudrate)
                if hit is not None:
                    result.hits.append(hit)
                result.probes += 1
                if progress is not None:
                    progress(result.probes, total, baudrate, unit)
        finally:
            await client.close()
    result.elapsed_s = time.monotonic() - started
    return result


def render_scan(result: ScanResult) -> str:
    """The terminal report of a scan."""
    out = [
        f"{result.port}: {result.probes} probes of {result.register} register "
        f"{result.address} in {result.elapsed_s:.1f} s"
    ]
    for baudrate in result.baudrates:
        hits = [h for h in result.hits if h.baudrate == baudrate]
        out.append(f"  {baudrate:>6} baud: " + (f"{len(hits)} unit(s)" if hits else "nothing"))
        for h in hits:
            detail = {
                "registers": f"register = {h.value}",
                "exception": f"exception {h.code} (present; register not readable)",
                "mismatch": "answered with an unexpected frame",
            }[h.answer]
            out.append(f"    unit {h.unit_id:>3}  {h.latency_ms:>6.1f} ms  {detail}")
    return "\n".join(out)
