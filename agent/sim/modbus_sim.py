"""Simulated Modbus devices: a pymodbus server serving profiles' points.

Each unit id serves one :class:`~cityedge.profiles.Profile` with plausible
moving values (mains voltage with noise, counters that only go up, a
temperature on a daily sine...), encoded with the driver's own codec so
they round-trip. For tests it can also pin registers to exact words, make
a unit silent (never answers, like a dead RS-485 slave), answer an
exception for chosen addresses, and it counts every request it received
per unit and function code.

    python -m cityedge.sim.modbus_sim --profile eastron/sdm630 --port 15020 --unit 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from cityedge.drivers.modbus.codec import EncodeError, encode_value
from cityedge.profiles import Point, Profile, RegisterType
from cityedge.readings import Value

_REGISTERS: dict[int, RegisterType] = {
    1: "coil", 5: "coil", 15: "coil",
    2: "discrete_input",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding",
    4: "input",
}  # fmt: skip


def simulated_value(point: Point, t: float, rng: random.Random, day_s: float = 86400.0) -> Value:
    """A plausible engineering value of ``point`` at ``t`` seconds."""
    unit, name = point.unit, point.name
    if point.register in ("coil", "discrete_input") or point.type == "bool":
        return int(t / 10.0) % 2 == 0
    if point.type == "string":
        return f"SIM-{name[:10].upper()}"
    if point.type == "bitfield":
        return 0
    if unit in ("kWh", "Wh", "kvarh", "varh", "m3", "MWh") or "energy" in name:
        return round(1000.0 + t / 36.0, 3)  # 100 W average
    # A daily cycle plus a minutes-long ripple, so a short demo shows movement.
    wave = math.sin(2 * math.pi * (t % day_s) / day_s) + 0.15 * math.sin(2 * math.pi * t / 97.0)
    by_unit: dict[str, float] = {
        "V": 400.0 if any(s in name for s in ("l1_l2", "l2_l3", "l3_l1")) else 230.0,
        "A": 5.0 + 2.0 * wave,
        "W": 1150.0 + 400.0 * wave,
        "VA": 1200.0 + 400.0 * wave,
        "var": 150.0,
        "Hz": 50.0,
        "Cel": 15.0 + 8.0 * wave,
        "%": 50.0 + 20.0 * wave,
    }
    value = by_unit.get(unit, 100.0)
    value += rng.gauss(0.0, max(0.01, abs(value) * 0.002))
    if not point.type.startswith("float"):
        step = abs(point.scale) or 1.0  # whole register counts, in engineering units
        value = round(round((value - point.offset) / step) * step + point.offset, 9)
    if point.type.startswith("uint"):
        value = abs(value)
    if point.write is not None:
        value = min(max(value, point.write.min), point.write.max)
    return value


class _Unit:
    """One simulated device: a profile and its pinned registers."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.pinned: dict[tuple[str, int], int] = {}

    def words(
        self, register: str, start: int, count: int, t: float, rng: random.Random
    ) -> list[int]:
        image = [0] * count
        for point in self.profile.points:
            if point.register != register or point.end <= start or point.address >= start + count:
                continue
            try:
                words = encode_value(point, simulated_value(point, t, rng))
            except EncodeError:
                continue
            for i, word in enumerate(words):
                if 0 <= point.address + i - start < count:
                    image[point.address + i - start] |= word
        for i in range(count):
            image[i] = self.pinned.get((register, start + i), image[i])
        return image


class SimContext(ModbusServerContext):
    """The datastore pymodbus asks: computes values on each request."""

    def __init__(self, sim: ModbusSim) -> None:  # no super(): it wants data blocks
        self.old_simulator = True
        self.simdevices = []
        self._sim = sim

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if delay := self._sim.delay_s.get(device_id, 0.0):
            await asyncio.sleep(delay)  # a slow device: answers late
        return self._sim.handle_read(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        return self._sim.handle_write(device_id, func_code, address, values)

    def device_ids(self) -> list[int]:
        return list(self._sim.units)


class ModbusSim:
    """A pymodbus server (TCP or RTU on a serial port) serving profiles per unit id."""

    def __init__(
        self,
        units: dict[int, Profile],
        *,
        host: str = "127.0.0.1",
        port: int = 5020,
        serial_port: str | None = None,
        baudrate: int = 19200,
        seed: int = 0,
    ) -> None:
        self.units = {uid: _Unit(p) for uid, p in units.items()}
        self.host, self.port, self.serial_port, self.baudrate = host, port, serial_port, baudrate
        self.silent: set[int] = set()
        self.exceptions: dict[tuple[int, str, int], int] = {}
        self.delay_s: dict[int, float] = {}
        self.requests: Counter[tuple[int, int]] = Counter()
        self._rng = random.Random(seed)
        self._t0 = time.monotonic()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    def pin(self, unit: int, register: str, address: int, words: Sequence[int]) -> None:
        """Serve exactly ``words`` from ``address`` on, instead of simulated values."""
        for i, word in enumerate(words):
            self.units[unit].pinned[(register, address + i)] = word

    def fail(self, unit: int, register: str, address: int, code: int = 2) -> None:
        """Answer any read covering ``address`` with exception ``code``."""
        self.exceptions[(unit, register, address)] = code

    def request_count(self, unit: int | None = None, function: int | None = None) -> int:
        return sum(
            n for (u, f), n in self.requests.items()
            if unit in (None, u) and function in (None, f)
        )  # fmt: skip

    def handle_read(
        self, unit: int, fc: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        self.requests[(unit, fc)] += 1
        if unit in self.silent or unit not in self.units:
            raise NoSuchIdException(f"unit {unit}")  # with ignore_missing_devices: no reply
        register = _REGISTERS[fc]
        for (u, reg, addr), code in self.exceptions.items():
            if u == unit and reg == register and address <= addr < address + count:
                return ExcCodes(code)
        words = self.units[unit].words(
            register, address, count, time.monotonic() - self._t0, self._rng
        )
        if register in ("coil", "discrete_input"):
            return [bool(w) for w in words]
        return words

    def handle_write(
        self, unit: int, fc: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        self.requests[(unit, fc)] += 1
        if unit in self.silent or unit not in self.units:
            raise NoSuchIdException(f"unit {unit}")
        self.pin(unit, _REGISTERS[fc], address, [int(v) for v in values])
        return None

    async def start(self) -> None:
        """Start serving; returns once the server listens (or the port is open)."""
        context = SimContext(self)
        if self.serial_port is not None:
            self._server = ModbusSerialServer(
                context, framer=FramerType.RTU, port=self.serial_port, baudrate=self.baudrate,
                ignore_missing_devices=True, reconnect_delay=0,
            )  # fmt: skip
        else:
            self._server = ModbusTcpServer(
                context, address=(self.host, self.port), ignore_missing_devices=True
            )
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> ModbusSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(args: argparse.Namespace) -> None:
    from cityedge.config.profile_loader import load_profile

    profile = load_profile(Path(args.profiles_dir), args.profile)
    sim = ModbusSim({u: profile for u in args.unit}, host=args.host, port=args.port,
                    serial_port=args.serial, baudrate=args.baudrate)  # fmt: skip
    async with sim:
        print(f"serving {args.profile} on units {args.unit}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a profile until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m cityedge.sim.modbus_sim")
    parser.add_argument("--profile", required=True, help="<vendor>/<model>")
    parser.add_argument("--profiles-dir", default="firmware-profiles")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=15020)
    parser.add_argument("--serial", help="serve RTU on this serial port instead of TCP")
    parser.add_argument("--baudrate", type=int, default=19200)
    parser.add_argument("--unit", type=int, action="append", default=None)
    args = parser.parse_args(argv)
    args.unit = args.unit or [1]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
