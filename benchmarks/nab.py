"""Run a detector over NAB-style series, one value at a time, and score it.

    python benchmarks/nab.py --data DIR --results OUT [--detector NAME]
        [--thresholds-from auto|leave-one-category-out|fixed] [--thresholds-file FILE]
        [--single] [--score-only]

DIR holds data/<category>/<name>.csv, labels/combined_windows.json and
config/profiles.json (the layout of ../shared/nab). Writes
OUT/<detector>/<category>/<detector>_<name>.csv (timestamp,anomaly_score) and
OUT/thresholds.json, and prints per profile the score at NAB's optimised
threshold and the score at the shipped thresholds. docs/nab.md explains both.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parent))

import nab_detectors
import nab_scorer

MODES = ("auto", "leave-one-category-out", "fixed")


@dataclass
class Series:
    key: str  # "category/name.csv"
    stamps: list[str]  # as written in the data file
    times: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]


def load_series(data_dir: Path, keys: Sequence[str]) -> list[Series]:
    out = []
    for key in keys:
        with open(data_dir / key, newline="") as f:
            rows = [r for r in csv.reader(f)][1:]
        stamps = [r[0] for r in rows if r]
        values = np.array([float(r[1]) for r in rows if r])
        out.append(Series(key, stamps, np.array(stamps, dtype="datetime64[us]"), values))
    return out


# ---------------------------------------------------------------- detection


def run_single(spec: nab_detectors.DetectorSpec, series: list[Series]) -> tuple[list[Any], float]:
    """One Detector per series, fed row by row; returns scores and detector seconds."""
    scores, spent = [], 0.0
    for s in series:
        det = spec.make()
        step = det.step
        times = s.times.tolist()
        values = s.values.tolist()
        t0 = time.perf_counter()
        out = [step(t, v) for t, v in zip(times, values, strict=True)]
        spent += time.perf_counter() - t0
        scores.append(np.array(out, dtype=np.float64))
    return scores, spent


def run_batch(spec: nab_detectors.DetectorSpec, series: list[Series]) -> tuple[list[Any], float]:
    """All series in lockstep, one tick per row index; shorter series go inactive."""
    assert spec.make_batch is not None
    lengths = np.array([s.values.size for s in series])
    ticks, n = int(lengths.max()), len(series)
    times = np.full((ticks, n), np.datetime64("NaT"), dtype="datetime64[us]")
    values = np.full((ticks, n), np.nan)
    for j, s in enumerate(series):
        times[: s.values.size, j] = s.times
        values[: s.values.size, j] = s.values
    active = np.arange(ticks)[:, None] < lengths[None, :]
    out = np.zeros((ticks, n))
    det = spec.make_batch(n)
    t0 = time.perf_counter()
    for k in range(ticks):
        out[k] = det.step_batch(times[k], values[k], active[k])
    spent = time.perf_counter() - t0
    return [out[: s.values.size, j].copy() for j, s in enumerate(series)], spent


def check_scores(key: str, scores: npt.NDArray[np.float64]) -> None:
    bad = np.flatnonzero(~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{key}: data row {i + 1} scored {float(scores[i])!r}, outside [0, 1]")


def write_results(out_dir: Path, detector: str, s: Series, scores: Any) -> None:
    path = nab_scorer.results_path(out_dir, detector, s.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "anomaly_score", "value"])
        for stamp, score, value in zip(s.stamps, scores.tolist(), s.values.tolist(), strict=True):
            w.writerow([stamp, repr(score), repr(value)])


# ---------------------------------------------------------------- thresholds


def fixed_thresholds(
    spec: nab_detectors.DetectorSpec | None, detector: str, path: Path | None
) -> dict[str, float] | None:
    """Shipped thresholds from a thresholds.json file, else from the detector."""
    if path is not None:
        with open(path) as f:
            table = json.load(f)
        if detector not in table:
            known = ", ".join(sorted(table)) or "none"
            raise SystemExit(f"{path}: no thresholds for detector {detector!r} (it has: {known})")
        entry = table[detector]
        return {p: float(v["threshold"]) for p, v in entry.items()}
    if spec is not None and spec.thresholds is not None:
        return dict(spec.thresholds)
    return None


def in_sample(spec: nab_detectors.DetectorSpec | None, labels: nab_scorer.Labels) -> bool:
    """Were the detector's shipped thresholds fitted on these very labels?"""
    if spec is None or spec.calibrated_on is None:
        return False
    return nab_scorer.labels_digest(labels) == spec.calibrated_on


def score(
    corpus: nab_scorer.Corpus,
    costs: dict[str, nab_scorer.CostMatrix],
    mode: str,
    fixed: dict[str, float] | None,
) -> dict[str, dict[str, Any]]:
    """Per profile: NAB's optimised threshold and score, and the shipped ones."""
    report = {}
    for name, cost in costs.items():
        t_opt, raw = corpus.optimise(cost)
        optimised = {"threshold": t_opt, "score": corpus.normalise(cost, raw)}
        entry: dict[str, Any]
        if mode == "fixed":
            if fixed is None or name not in fixed:
                raise SystemExit(f"no fixed {name} threshold for this detector")
            t = fixed[name]
            shipped = corpus.normalise(cost, corpus.raw_at(cost, t))
            entry = {"threshold": t, "source": "fixed", "score": shipped}
        else:
            shipped, per_category = nab_scorer.leave_one_category_out(corpus, cost)
            # What ships is the threshold the same procedure picks from every
            # category; its score on unseen series is estimated by `score`.
            entry = {
                "threshold": t_opt,
                "source": "leave-one-category-out",
                "score": shipped,
                "per_category": per_category,
            }
        entry["nab_optimised"] = optimised
        report[name] = entry
    return report


def save_thresholds(path: Path, detector: str, report: dict[str, dict[str, Any]]) -> None:
    """Merge this detector's entry into OUT/thresholds.json (others are kept)."""
    table: dict[str, Any] = {}
    if path.exists():
        with open(path) as f:
            table = json.load(f)
    table[detector] = report
    with open(path, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder laid out like ../shared/nab")
    p.add_argument("--results", type=Path, required=True, help="output folder")
    p.add_argument(
        "--detector",
        default="cityedge",
        help="name in benchmarks/nab_detectors.py (default: the agent's own)",
    )
    p.add_argument("--thresholds-from", choices=MODES, default="auto")
    p.add_argument("--thresholds-file", type=Path, help="thresholds.json to take fixed ones from")
    p.add_argument("--single", action="store_true", help="step() per stream even if batched")
    p.add_argument(
        "--score-only", action="store_true", help="score OUT/<detector> as it is; write nothing"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data / "data"
    labels = nab_scorer.load_labels(args.data / "labels" / "combined_windows.json")
    costs = nab_scorer.cost_matrices(nab_scorer.load_profiles(args.data / "config/profiles.json"))
    keys = [k for k in nab_scorer.data_files(data_dir) if k in labels]
    skipped = len(nab_scorer.data_files(data_dir)) - len(keys)
    series = load_series(data_dir, keys)
    rows = sum(s.values.size for s in series)
    categories = sorted({nab_scorer.category(k) for k in keys})
    print(f"NAB: {len(keys)} series, {rows} rows, {len(categories)} categories from {args.data}")
    if skipped:
        print(f"  ({skipped} data files without labels skipped)")

    spec = None if args.score_only else nab_detectors.get(args.detector)
    if spec is None:
        results = nab_scorer.load_results(args.results, args.detector, keys)
    else:
        batched = spec.make_batch is not None and not args.single
        scores, spent = (run_batch if batched else run_single)(spec, series)
        for s, sc in zip(series, scores, strict=True):
            check_scores(s.key, sc)
            write_results(args.results, args.detector, s, sc)
        how = f"batched, {len(series)} streams in lockstep" if batched else "step() per row"
        print(
            f"detector {args.detector}: {1e6 * spent / rows:.2f} us/point ({how}), "
            f"{spent:.2f} s in the detector"
        )
        results = nab_scorer.load_results(args.results, args.detector, keys)

    fixed = fixed_thresholds(spec, args.detector, args.thresholds_file)
    shipped_fitted_here = args.thresholds_file is None and in_sample(spec, labels)
    mode = args.thresholds_from
    if mode == "auto":
        mode = "fixed" if fixed is not None else "leave-one-category-out"
        if mode == "fixed" and shipped_fitted_here:
            mode = "leave-one-category-out"
            print(
                "  (the shipped thresholds were fitted on these very labels: a fixed-threshold"
                " score here would be in-sample, so the shipped column is leave-one-category-out)"
            )
    fitted_here = mode == "fixed" and shipped_fitted_here
    if fitted_here:
        print("  (note: these fixed thresholds were fitted on these very labels: in-sample)")
    corpus = nab_scorer.build_corpus(results, data_dir, labels)
    t0 = time.perf_counter()
    report = score(corpus, costs, mode, fixed)
    if fitted_here:
        for entry in report.values():
            entry["in_sample"] = True
    spent = time.perf_counter() - t0
    print(f"{'profile':<20} {'NAB-optimised':<24} shipped ({mode})")
    for name, entry in report.items():
        opt = entry["nab_optimised"]
        shipped_t = f"t={entry['threshold']:.6g}" if mode == "fixed" else "t per category"
        optimised = f"{opt['score']:6.2f} (t={opt['threshold']:.6g})"
        print(f"{name:<20} {optimised:<24} {entry['score']:6.2f} ({shipped_t})")
    print(f"scoring took {spent:.2f} s")
    if not args.score_only:
        path = args.results / "thresholds.json"
        save_thresholds(path, args.detector, report)
        print(f"shipped thresholds written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
