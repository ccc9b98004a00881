"""End to end: readings from a source to an MQTT subscriber through the outbox.

Runs the real Writer -> Outbox (durability full) -> Sender -> Mosquitto (a
broker started here on a free loopback port) -> a subscriber in another
process that inflates and counts every reading. Two runs:

* flat out: how many readings per second the path carries;
* paced at the city load (100 devices x 50 points per second = 5,000/s) and
  at 10 times that, for the agent process's CPU share.

Prints readings/s, CPU seconds per 100,000 readings, peak RSS.

    python benchmarks/bench_e2e.py [--total 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, readings

from cityedge.config.model import UplinkConfig
from cityedge.outbox import Outbox
from cityedge.pipeline import Writer
from cityedge.uplink.sender import Sender

SUBSCRIBER = r"""
import sys, time, zlib, json
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, want = int(sys.argv[1]), int(sys.argv[2])
got = 0
first = None
def on_message(c, u, m):
    global got, first
    if m.topic.endswith("/state"):
        return
    doc = json.loads(zlib.decompress(m.payload))
    if first is None:
        first = time.monotonic()
    got += len(doc["readings"])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv311)
c.on_message = on_message
c.connect("127.0.0.1", port)
c.subscribe("cityedge/#", qos=1)
print("ready", flush=True)
deadline = time.monotonic() + 600
while got < want and time.monotonic() < deadline:
    c.loop(0.05)
print(got, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_path(port: int, tmp: Path, total: int, rate: float | None) -> dict[str, float]:
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, str(port), str(total)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "ready"
    executor = ThreadPoolExecutor(1)
    ob = Outbox(tmp / f"e2e-{rate}.sqlite", max_bytes=1 << 34, durability="full")
    ob.open()
    writer = Writer(ob, executor)
    cfg = UplinkConfig(port=port, batch_max_readings=1000, batch_max_age_s=0.2)
    sender = Sender(cfg, ob, executor, gateway_id="gw", site_id="bench")
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sender.run())]
    block = readings(step := 500)  # reused: RSS is the agent's, not the test data's
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i in range(0, total, step):
        await writer.submit(block)
        if rate is not None:
            ahead = (i + step) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    deadline = time.monotonic() + 600
    while sender.stats.readings_acked < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await sender.stop()
    await tasks[1]
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    ob.close()
    executor.shutdown()
    out, _ = sub.communicate(timeout=120)
    received = int(out.strip().splitlines()[-1])
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "received": received,
        "seconds": dt,
        "rate": received / dt,
        "cpu_per_100k": cpu / total * 100_000,
        "cpu_share": cpu / dt,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", type=int, default=200_000)
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        conf = tmp / "m.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
        )
        broker = subprocess.Popen([mosq, "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            r = asyncio.run(run_path(port, tmp, args.total, None))
            print(
                f"flat out: {r['received']:,} readings in {r['seconds']:.2f} s = "
                f"{r['rate']:,.0f} readings/s; agent CPU {r['cpu_per_100k']:.2f} s per 100,000 "
                f"readings"
            )
            for rate in (5_000.0, 50_000.0):
                total = int(rate * args.paced_seconds)
                r = asyncio.run(run_path(port, tmp, total, rate))
                print(
                    f"paced {rate:>8,.0f}/s: delivered {r['rate']:,.0f}/s, agent CPU "
                    f"{100 * r['cpu_share']:.1f}% of one core, "
                    f"{r['cpu_per_100k']:.2f} s per 100,000"
                )
        finally:
            broker.terminate()
            broker.wait(10)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the agent side (whole benchmark process): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
