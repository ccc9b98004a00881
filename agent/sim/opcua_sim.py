"""A simulated pumping station behind a real asyncua server, for the demo.

The address space (namespace ``urn:cityedge:sim``, index 2 on a fresh
server; string node ids so a restarted server has the same ones)::

    Objects/2:PumpStation            ns=2;s=PumpStation
        2:TankLevel    Double   %       ns=2;s=PumpStation.TankLevel
        2:PumpSpeed    Double   1/min   ns=2;s=PumpStation.PumpSpeed
        2:Pressure     Double   bar     ns=2;s=PumpStation.Pressure
        2:Outflow      Double   m3/h    ns=2;s=PumpStation.Outflow
        2:PumpRunning  Boolean          ns=2;s=PumpStation.PumpRunning

The station is a wet well: inflow (a slow sine) fills the tank; the pump
starts at :data:`PUMP_ON_PCT` and stops at :data:`PUMP_OFF_PCT`, so the
level saws up and down and crosses the profile's high-level alert once per
cycle. Security ``None``, anonymous, loopback only.

    python -m cityedge.sim.opcua_sim --port 4840
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

NS_URI = "urn:cityedge:sim"
PUMP_ON_PCT = 86.0
PUMP_OFF_PCT = 45.0
RATED_SPEED = 1480.0  # 1/min, a 4-pole motor at 50 Hz
STEP_S = 0.5


class PumpStation:
    """The station's physics: pure, one :meth:`step` per ``dt`` seconds."""

    def __init__(self, level_pct: float = 76.0, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.level = level_pct
        self.running = False
        self.speed = 0.0
        self.t = 0.0

    def step(self, dt: float) -> dict[str, float | bool]:
        self.t += dt
        inflow = 0.5 + 0.15 * math.sin(self.t / 40.0)  # %/s
        if self.level >= PUMP_ON_PCT:
            self.running = True
        elif self.level <= PUMP_OFF_PCT:
            self.running = False
        target = RATED_SPEED if self.running else 0.0
        self.speed += (target - self.speed) * min(1.0, dt / 2.0)  # soft start/stop
        outflow = 1.3 * self.speed / RATED_SPEED  # %/s at full speed
        self.level = min(100.0, max(0.0, self.level + (inflow - outflow) * dt))
        static = 0.3 + 0.004 * self.level
        pressure = static + 2.6 * (self.speed / RATED_SPEED) ** 2 + self.rng.gauss(0, 0.02)
        return {
            "TankLevel": round(self.level, 2),
            "PumpSpeed": round(self.speed + (self.rng.gauss(0, 3) if self.running else 0), 1),
            "Pressure": round(max(0.0, pressure), 3),
            "Outflow": round(outflow * 216.0, 1),  # a 6 m3 well: 1 %/s is 216 m3/h
            "PumpRunning": self.running,
        }


VARIABLES: dict[str, ua.VariantType] = {
    "TankLevel": ua.VariantType.Double,
    "PumpSpeed": ua.VariantType.Double,
    "Pressure": ua.VariantType.Double,
    "Outflow": ua.VariantType.Double,
    "PumpRunning": ua.VariantType.Boolean,
}


class OpcUaSim:
    """An asyncua server on ``127.0.0.1:port`` serving one :class:`PumpStation`."""

    def __init__(self, port: int, station: PumpStation | None = None) -> None:
        self.port = port
        self.station = station or PumpStation()
        self.updates = 0
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("cityedge simulated pumping station")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        ns = await server.register_namespace(NS_URI)
        station = await server.nodes.objects.add_object(
            _node_id("PumpStation", ns), ua.QualifiedName("PumpStation", ns)
        )
        values = self.station.step(0.0)
        for name, vtype in VARIABLES.items():
            self._nodes[name] = await station.add_variable(
                _node_id(f"PumpStation.{name}", ns),
                ua.QualifiedName(name, ns),
                ua.Variant(values[name], vtype),
            )
        await server.start()
        self._server = server
        self._task = asyncio.create_task(self._run(), name="opcua-sim")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(STEP_S)
            await self.write(self.station.step(STEP_S))

    async def write(self, values: dict[str, float | bool]) -> None:
        """Set variables server-side, as the PLC program would."""
        for name, value in values.items():
            # No SourceTimestamp: the server stamps the change when it takes it.
            dv = ua.DataValue(ua.Variant(value, VARIABLES[name]))
            await self._nodes[name].write_value(dv)
        self.updates += 1

    async def stop(self) -> None:
        """Stop the server, then the per-session tasks asyncua's server leaves running."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and _is_server_task(t)]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


def _node_id(name: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(ns))


def _is_server_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "/asyncua/server/" in code.co_filename


async def _serve(port: int) -> None:
    sim = OpcUaSim(port)
    await sim.start()
    print(f"pumping station on {sim.url} (Ctrl-C stops)")
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a simulated pumping station (OPC UA)")
    parser.add_argument("--port", type=int, default=4840)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
