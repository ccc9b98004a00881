"""Two versions of a block model side by side on fresh synthetic series none was built on.

NAB's 38 series are the scoreboard, but every variant of the detector was
scored on them while it was built. This is the check against that: both
versions score the same new synthetic series (``models/block_novelty/train.py``'s
generator: daily and weekly rhythms, trends, noise, one injected anomaly per
series: spike, shift, drift, flatline, burst or a missing pattern) under NAB's
rules, each at its own best threshold and at a fixed one. Pick seeds no
version has seen (train.py calibrates with 20240611 + 1).

    mkdir -p /tmp/v3/block_novelty
    git show cba89e4:models/block_novelty/block_novelty.onnx \
        > /tmp/v3/block_novelty/block_novelty.onnx
    python benchmarks/bench_anomaly_unseen.py --baseline /tmp/v3 --seeds 777,778,779
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

from cityedge.anomaly import AnomalyEngine

REPO = Path(__file__).resolve().parents[1]
MODEL = "block_novelty"
GRID = np.round(np.arange(0.02, 0.9, 0.01), 2)


def _train() -> ModuleType:
    path = REPO / "models" / MODEL / "train.py"
    spec = importlib.util.spec_from_file_location("block_novelty_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--baseline", type=Path, required=True, help="models folder of the other version"
    )
    ap.add_argument("--candidate", type=Path, default=REPO / "models")
    ap.add_argument("--seeds", default="777,778,779")
    ap.add_argument("--series", type=int, default=120)
    ap.add_argument("--fixed", type=float, default=0.361, help="the fixed threshold to score at")
    args = ap.parse_args()
    train = _train()
    print(f"# bench_anomaly_unseen {datetime.now():%Y-%m-%d} {machine()}")
    print(f"{'seed':>5} {'version':9} " + " ".join(f"{p:>26}" for p in train.PROFILES))
    for seed in (int(s) for s in args.seeds.split(",")):
        series, onsets = train.synthetic_set(seed, args.series)
        for name, folder in (("baseline", args.baseline), ("candidate", args.candidate)):
            out = train.run_engine(AnomalyEngine(folder), MODEL, series)
            cells = []
            for fp_w, fn_w in train.PROFILES.values():
                null, perfect = -fn_w * len(series), float(len(series))

                def norm(raw: float, null: float = null, perfect: float = perfect) -> float:
                    return 100 * (raw - null) / (perfect - null)

                raws = [train.nab_score(out, onsets, t, fp_w, fn_w) for t in GRID]
                best = int(np.argmax(raws))
                fixed = norm(train.nab_score(out, onsets, args.fixed, fp_w, fn_w))
                cells.append(f"{norm(raws[best]):6.2f} (t={GRID[best]:.2f}) {fixed:6.2f}")
            print(f"{seed:>5} {name:9} " + " ".join(f"{c:>26}" for c in cells), flush=True)
    print(f"(per profile: best threshold's score (threshold), then at the fixed {args.fixed})")


if __name__ == "__main__":
    main()
