"""RTU throughput against a simulated slave on a pty link that honours byte timing.

Points per second read by the whole driver (scheduler, transport, codec)
from one slave at 9600 and 19200 baud, against the line's theoretical
maximum: (request + response bytes) x 10 bits / baud + two 3.5-character
gaps per transaction.

    python benchmarks/bench_modbus_rtu.py [seconds]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.modbus.client import rtu_gap_s
from cityedge.drivers.modbus.scheduler import ModbusBus
from cityedge.profiles import Point, Profile
from cityedge.readings import Reading
from cityedge.sim.modbus_sim import ModbusSim
from tests.peers.pty import pty_link


def profile(n_points: int) -> Profile:
    points = tuple(Point(f"p{i}", "input", 2 * i, "float32", unit="V") for i in range(n_points))
    return Profile("bench/meter", "bench", "meter", "energy", points)


def theoretical(n_points: int, baud: int, bus: BusConfig) -> float:
    regs = 2 * n_points
    frame_bytes = 8 + (5 + 2 * regs)  # read request + response (RTU, with CRC)
    seconds = frame_bytes * 10 / baud + 2 * rtu_gap_s(bus)
    return n_points / seconds


async def run(baud: int, n_points: int, seconds: float) -> tuple[float, float, int]:
    prof = profile(n_points)
    async with pty_link(baud) as link, ModbusSim({1: prof}, serial_port=link.a, baudrate=baud):
        bus = BusConfig(
            name="rs485", type="modbus-rtu", device=link.b, baudrate=baud, timeout_s=1.0
        )
        dev = DeviceConfig(id="m", bus="rs485", unit_id=1, profile_name=prof.name,
                           profile=prof, poll_interval_s=0.001)  # fmt: skip
        modbus = ModbusBus(bus, [(dev, "cell")])
        good = 0

        async def sink(readings: Sequence[Reading]) -> None:
            nonlocal good
            good += sum(1 for r in readings if r.quality == "good")

        task = asyncio.create_task(modbus.run(sink))
        await asyncio.sleep(0.5)  # warm up
        start_good, t0 = good, time.monotonic()
        await asyncio.sleep(seconds)
        rate = (good - start_good) / (time.monotonic() - t0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        skipped = modbus.status()["devices"]["m"]["skipped_slots"]  # type: ignore[index]
        return rate, theoretical(n_points, baud, bus), int(skipped)


async def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    print(f"{'baud':>6} {'points/req':>10} {'points/s':>9} {'max':>9} {'fraction':>8}")
    for baud in (9600, 19200):
        for n in (1, 10, 60):
            rate, best, _ = await run(baud, n, seconds)
            print(f"{baud:>6} {n:>10} {rate:>9.1f} {best:>9.1f} {rate / best:>8.0%}")


if __name__ == "__main__":
    asyncio.run(main())
