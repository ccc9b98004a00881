"""Cost of the anomaly runtime: microseconds per point per stream, state bytes per stream.

Every tick scores one reading of every stream with one onnxruntime call, as the
agent does. Streams are pre-warmed so the window is full.

    python benchmarks/bench_anomaly.py [--streams 1,38,100,1000] [--ticks 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cityedge.anomaly import AnomalyEngine

MODELS = Path(__file__).resolve().parents[1] / "models"


def bench(model: str, streams: int, ticks: int, warm: int) -> float:
    """Median over 3 runs of microseconds per point per stream."""
    engine = AnomalyEngine(MODELS)
    for k in range(streams):
        engine.add_stream(k, model)
    rng = np.random.default_rng(1)
    values = 100 + rng.normal(0, 1, (warm + 3 * ticks, streams)).cumsum(axis=0)
    now = datetime(2024, 1, 1)
    for i in range(warm):
        engine.step([(k, now, float(values[i, k])) for k in range(streams)])
    runs = []
    for r in range(3):
        rows = values[warm + r * ticks : warm + (r + 1) * ticks]
        batches = [[(k, now, float(v)) for k, v in enumerate(row)] for row in rows]
        t0 = time.perf_counter()
        for b in batches:
            engine.step(b)
        runs.append((time.perf_counter() - t0) / (ticks * streams) * 1e6)
    return float(np.median(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="block_novelty")
    ap.add_argument("--streams", default="1,38,100,1000")
    ap.add_argument("--ticks", type=int, default=200)
    args = ap.parse_args()
    engine = AnomalyEngine(MODELS)
    per = engine.state_bytes_per_stream(args.model)
    window = engine.model_of_name(args.model).window
    print(f"# bench_anomaly {datetime.now():%Y-%m-%d} {platform.machine()} cores={os.cpu_count()}")
    print(f"model {args.model}: window {window}, state {per} bytes per stream")
    for n in (int(s) for s in args.streams.split(",")):
        ticks = max(20, min(args.ticks, 20000 // n))
        us = bench(args.model, n, ticks, warm=window)
        print(f"streams {n:5d}: {us:8.2f} us per point per stream ({ticks} ticks)")


if __name__ == "__main__":
    main()
