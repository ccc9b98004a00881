"""Outbox: accepted readings per second per durability setting; restart time
with one million readings buffered.

    python benchmarks/bench_outbox.py [--restart-rows 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, readings

from cityedge.outbox import Outbox
from cityedge.uplink.codec import reading_body


def accept_rate(durability: str, commit_rows: int, total: int, tmp: Path) -> float:
    path = tmp / f"a-{durability}-{commit_rows}.sqlite"
    ob = Outbox(path, max_bytes=1 << 34, durability=durability)
    ob.open()
    items = [(2, r.device, reading_body(r)) for r in readings(total)]
    t0 = time.perf_counter()
    for i in range(0, total, commit_rows):
        ob.accept(items[i : i + commit_rows])
    dt = time.perf_counter() - t0
    ob.close()
    return total / dt


def restart_time(rows: int, tmp: Path) -> tuple[float, float]:
    path = tmp / "restart.sqlite"
    ob = Outbox(path, max_bytes=1 << 34, durability="normal")
    ob.open()
    chunk = [(2, r.device, reading_body(r)) for r in readings(10_000)]
    for _ in range(rows // len(chunk)):
        ob.accept(chunk)
    ob.close()
    size_mb = path.stat().st_size / 1e6
    t0 = time.perf_counter()
    ob2 = Outbox(path, max_bytes=1 << 34)
    ob2.open()
    dt = time.perf_counter() - t0
    assert sum(ob2.count_by_prio) == rows // len(chunk) * len(chunk)
    ob2.close()
    return dt, size_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--restart-rows", type=int, default=1_000_000)
    ap.add_argument("--total", type=int, default=100_000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for durability in ("full", "normal"):
            for commit_rows in (100, 1000, 5000):
                rate = accept_rate(durability, commit_rows, args.total, tmp)
                print(
                    f"accept durability={durability:<6} rows/commit={commit_rows:<5} "
                    f"{rate:>10,.0f} readings/s"
                )
        dt, size = restart_time(args.restart_rows, tmp)
        print(f"restart with {args.restart_rows:,} readings buffered ({size:.0f} MB): {dt:.3f} s")


if __name__ == "__main__":
    main()
