"""OPC UA data changes per second through the subscription path.

A local asyncua server runs in a child process (so its CPU is not counted)
and changes N Double variables every tick; the cityedge source subscribes
to all of them (sampling 10 ms, publishing 50 ms) and hands readings to a
counting sink. Reported: data changes delivered per second, and the
source's CPU seconds (this process) per 10,000 changes.

    python benchmarks/bench_opcua.py [seconds] [variables]
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.opcua.client import Settings
from cityedge.drivers.opcua.source import OpcUaSource
from cityedge.profiles import FieldMap, Profile
from cityedge.readings import Reading

TICK_S = 0.01


async def serve(port: int, n: int) -> None:
    """The child process: a server whose N variables all change every tick."""
    from asyncua import ua
    from asyncua.server.server import Server

    server = Server()
    await server.init()
    server.disable_clock()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:bench")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Bench", ns), "Bench")
    nodes = [await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0) for i in range(n)]
    await server.start()
    print("ready", flush=True)
    tick = 0
    while True:
        tick += 1
        for i, node in enumerate(nodes):
            dv = ua.DataValue(ua.Variant(float(tick * 1000 + i), ua.VariantType.Double))
            await server.write_attribute_value(node.nodeid, dv)
        await asyncio.sleep(TICK_S)


class Counter:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.count += len(readings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def measure(port: int, n: int, seconds: float, state: Path) -> tuple[int, float, float]:
    fields = tuple(
        FieldMap(key=f"ns=2;s=v{i}", name=f"v{i}", options={"sampling_interval_ms": 10})
        for i in range(n)
    )
    profile = Profile("bench/opcua", "bench", "opcua", "energy", protocol="opcua", fields=fields)
    device = DeviceConfig(id="plc", bus="b", profile_name=profile.name, profile=profile)
    url = f"opc.tcp://127.0.0.1:{port}/"
    bus = BusConfig("b", "opcua", options={"endpoint": url, "publishing_interval_ms": 50})
    settings = Settings.from_options(url, bus.options, state_dir=state, timeout_s=4)
    source = OpcUaSource(bus, [(device, "cell")], settings)
    sink = Counter()
    task = asyncio.create_task(source.run(sink))
    while sink.count < n:  # every variable's first value: subscribed
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    start_count, t0, c0 = sink.count, time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    count, wall, cpu = sink.count - start_count, time.perf_counter() - t0, time.process_time() - c0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return count, wall, cpu


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--server":
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3])))
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, __file__, "--server", str(port), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("server did not start")
        with TemporaryDirectory() as state:
            count, wall, cpu = asyncio.run(measure(port, n, seconds, Path(state)))
    finally:
        child.terminate()
        child.wait(10)
    offered = n / TICK_S
    print(f"machine: {machine()}")
    print(f"variables: {n}, server tick {TICK_S * 1000:.0f} ms (at most {offered:.0f} changes/s)")
    print(f"changes delivered: {count} in {wall:.1f} s = {count / wall:,.0f} changes/s")
    print(f"source CPU: {cpu:.2f} s = {cpu / count * 10_000:.3f} CPU s per 10,000 changes")


if __name__ == "__main__":
    main()
