"""Alert latency while a large routine backlog drains.

From a reading's arrival at the agent (its alert submitted by the sink) to the
broker's PUBACK of the batch carrying that alert, with 100,000 routine
readings waiting in the outbox (as after an outage) and live telemetry still
arriving. The real Writer -> Outbox (durability full) -> Sender -> Mosquitto on
loopback. Prints p50 / p99 / max over the alerts sent.

    python benchmarks/bench_alert_latency.py [--backlog 100000] [--alerts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, readings

from cityedge.config.model import UplinkConfig
from cityedge.outbox import Batch, Outbox
from cityedge.pipeline import Writer
from cityedge.readings import Priority
from cityedge.uplink.codec import decode_batch, reading_body
from cityedge.uplink.sender import Sender


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(port: int, tmp: Path, backlog: int, n_alerts: int) -> dict[str, float]:
    executor = ThreadPoolExecutor(1)
    ob = Outbox(tmp / "o.sqlite", max_bytes=1 << 34, durability="full")
    ob.open()
    block = readings(10_000)
    items = [(int(Priority.TELEMETRY), r.device, reading_body(r)) for r in block]
    for _ in range(backlog // len(block)):
        ob.accept(items)
    writer = Writer(ob, executor)
    cfg = UplinkConfig(port=port, batch_max_readings=500, batch_max_age_s=0.2)
    sender = Sender(cfg, ob, executor, gateway_id="gw", site_id="bench")
    sent: dict[str, float] = {}
    latency: list[float] = []

    def acked(batch: Batch) -> None:
        if batch.prio != Priority.ALERT:
            return
        now = time.perf_counter()
        for a in decode_batch(batch.payload)["alerts"]:
            t0 = sent.pop(str(a["alert_id"]), None)
            if t0 is not None:
                latency.append(now - t0)

    sender.on_acked = acked
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sender.run())]
    live = readings(100)
    waiting_at_first = ob.waiting(Priority.TELEMETRY)
    for i in range(n_alerts):
        await writer.submit(live)  # live telemetry keeps arriving
        aid = f"a{i}"
        sent[aid] = time.perf_counter()
        await writer.submit([{"alert_id": aid, "device": "meter-001", "level": "red"}],
                            Priority.ALERT)  # fmt: skip
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 60
    while sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    backlog_left = ob.waiting(Priority.TELEMETRY)
    await sender.stop()
    await tasks[1]
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    ob.close()
    executor.shutdown()
    q = statistics.quantiles(latency, n=100)
    return {"n": len(latency), "p50": q[49], "p99": q[98], "max": max(latency),
            "backlog_start": waiting_at_first, "backlog_left": backlog_left}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--alerts", type=int, default=50)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        conf = Path(d) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosq, "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            r = asyncio.run(run(port, Path(d), args.backlog, args.alerts))
        finally:
            broker.terminate()
            broker.wait(10)
    print(
        f"alert latency, arrival to broker ack, {r['n']} alerts while a backlog of "
        f"{r['backlog_start']:,.0f} readings drained ({r['backlog_left']:,.0f} left at the end): "
        f"p50 {1000 * r['p50']:.1f} ms, p99 {1000 * r['p99']:.1f} ms, max {1000 * r['max']:.1f} ms"
    )


if __name__ == "__main__":
    main()
