"""NAB scoring, written from the Numenta Anomaly Benchmark's published rules.

The rules (numenta/NAB at ea702d75: nab/sweeper.py, nab/optimizer.py,
nab/scorer.py and the runner's normalisation), restated:

* The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of each file are the
  probationary period: detections there are ignored, and they count neither as
  true nor as false positives.
* Each row gets a weight. Inside an anomaly window of width ``w`` (rows, both
  ends included) whose last row is ``r``, row ``i`` sits at
  ``p = -(r - i + 1) / w`` (``-1`` at the first row) and weighs
  ``tpWeight * S(p) / S(-1)``, where ``S(x) = 2 / (1 + exp(5 x)) - 1``
  (``-1`` for ``x > 3``): a detection on the first row of a window earns
  exactly ``tpWeight``. Outside windows a row weighs ``fpWeight * S(q)``, with
  ``q = (i - r') / (w' - 1)`` measured from the end ``r'`` of the closest
  preceding window of width ``w'``, and ``-fpWeight`` when no window precedes.
* A file's raw score at threshold ``t`` (a row is a detection when its anomaly
  score is ``>= t``): each window earns the largest weight among its detected
  rows (its earliest detection), or ``-fnWeight`` when none is detected; every
  detection outside a window adds its (negative) weight.
* The threshold is optimised per profile over all files together: the
  candidates are 1.1 (no detection) and every distinct anomaly score; the one
  with the largest summed raw score wins, the highest threshold on a tie.
* Normalised score = ``100 * (raw - null) / (perfect - null)``, with
  ``perfect = tpWeight * (number of labelled windows)`` and ``null`` the raw
  score of NAB's null detector (a constant 0.5, its threshold optimised the
  same way).

The sweep sorts every scorable row once and accumulates, so optimising over the
whole corpus is a sort plus a few vector passes.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000  # NAB caps the probationary period at 15% of 5000 rows
NO_DETECTION = 1.1  # NAB's first sweep threshold, above every score in [0, 1]
NULL_DETECTOR_SCORE = 0.5  # what NAB's null detector answers for every row

FloatArray = npt.NDArray[np.float64]
TimeArray = npt.NDArray[np.datetime64]
Timestamps = Sequence[datetime] | Sequence[str] | TimeArray | None
Results = Mapping[str, tuple[Timestamps, Sequence[float] | FloatArray]]
Labels = Mapping[str, Sequence[Sequence[str]]]
Profiles = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class CostMatrix:
    """One NAB application profile (tnWeight plays no part in the score)."""

    tp: float
    fp: float
    fn: float


# ---------------------------------------------------------------- loading


def load_labels(path: str | Path) -> dict[str, list[list[str]]]:
    """labels/combined_windows.json: file key -> [[start, end], ...]."""
    with open(path) as f:
        data: dict[str, list[list[str]]] = json.load(f)
    return data


def labels_digest(labels: Labels) -> str:
    """SHA-256 of the labels' content (key order and JSON layout do not matter)."""
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_profiles(path: str | Path) -> dict[str, dict[str, Any]]:
    """config/profiles.json as NAB ships it: profile -> {"CostMatrix": {...}}."""
    with open(path) as f:
        data: dict[str, dict[str, Any]] = json.load(f)
    return data


def cost_matrices(profiles: Profiles) -> dict[str, CostMatrix]:
    """Profile name -> cost matrix, from NAB's profiles.json layout."""
    out = {}
    for name, profile in profiles.items():
        cm = profile.get("CostMatrix", profile)
        out[name] = CostMatrix(float(cm["tpWeight"]), float(cm["fpWeight"]), float(cm["fnWeight"]))
    return out


def read_csv_column(path: str | Path, column: str) -> tuple[TimeArray, FloatArray]:
    """The timestamp column and one numeric column of a NAB-style CSV."""
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        try:
            col = header.index(column)
        except ValueError:
            raise ValueError(f"{path}: no column {column!r} (header {header})") from None
        stamps, values = [], []
        for row in rows:
            if row:
                stamps.append(row[0])
                values.append(row[col])
    return np.array(stamps, dtype="datetime64[us]"), np.array(values, dtype=np.float64)


def data_files(data_dir: str | Path) -> list[str]:
    """Every series under data_dir as NAB's "category/name.csv" keys, sorted."""
    root = Path(data_dir)
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.csv"))


def results_path(results_dir: str | Path, detector: str, key: str) -> Path:
    """OUT/<detector>/<category>/<detector>_<name>.csv for file key category/name.csv."""
    category, name = key.split("/")
    return Path(results_dir) / detector / category / f"{detector}_{name}"


def load_results(
    results_dir: str | Path, detector: str, keys: Sequence[str]
) -> dict[str, tuple[TimeArray, FloatArray]]:
    """A detector's NAB results files for the given file keys."""
    return {
        k: read_csv_column(results_path(results_dir, detector, k), "anomaly_score") for k in keys
    }


# ---------------------------------------------------------------- the rules


def scaled_sigmoid(x: FloatArray) -> FloatArray:
    """NAB's S(x) = 2 sigmoid(-5x) - 1, pinned to -1 beyond 3."""
    with np.errstate(over="ignore"):
        y = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, y)


def probation_rows(n: int) -> float:
    """Rows at the start of a file whose detections NAB ignores."""
    return min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * PROBATION_CAP_ROWS)


def _window_rows(
    key: str, stamps: TimeArray, windows: Sequence[Sequence[str]]
) -> list[tuple[int, int]]:
    """(first row, last row) of each window; windows must be ordered and disjoint."""
    rows = []
    for limits in windows:
        found = []
        for limit in limits:
            at = np.flatnonzero(stamps == np.datetime64(limit, "us"))
            if at.size == 0:
                raise ValueError(f"{key}: window limit {limit} is not a timestamp of the file")
            found.append(int(at[0]))
        rows.append((found[0], found[1]))
    ordered = all(lo <= hi for lo, hi in rows)
    disjoint = all(a[1] < b[0] for a, b in itertools.pairwise(rows))
    if not (ordered and disjoint):
        raise ValueError(f"{key}: windows must be ordered and must not overlap")
    return rows


@dataclass
class Corpus:
    """Every scorable row of a set of files, ready for any profile and threshold.

    Arrays run over the rows after each file's probationary period, file after
    file. ``window`` is a corpus-wide window id or -1; ``tp_pos`` holds the
    in-window position p, ``fp_pos`` the distance q past the preceding window
    (inf when none precedes).
    """

    keys: list[str]
    file_of_row: npt.NDArray[np.int64]
    score: FloatArray
    window: npt.NDArray[np.int64]
    tp_pos: FloatArray
    fp_pos: FloatArray
    file_of_window: npt.NDArray[np.int64]
    labelled_windows: npt.NDArray[np.int64]  # per file, as listed in the labels

    def weights(self, cost: CostMatrix) -> FloatArray:
        """Each row's weight under one profile (what a detection there is worth)."""
        max_tp = float(scaled_sigmoid(np.array([-1.0]))[0])
        tp = scaled_sigmoid(self.tp_pos) * cost.tp / max_tp
        fp = np.where(np.isinf(self.fp_pos), -1.0, scaled_sigmoid(self.fp_pos)) * cost.fp
        return np.where(self.window >= 0, tp, fp)

    def file_mask(self, keys: Sequence[str] | None) -> npt.NDArray[np.bool_]:
        """Boolean per file: is it among keys (all files when keys is None)."""
        if keys is None:
            return np.ones(len(self.keys), dtype=bool)
        wanted = set(keys)
        return np.array([k in wanted for k in self.keys], dtype=bool)

    def sweep(
        self, cost: CostMatrix, keys: Sequence[str] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Raw score at every candidate threshold, highest threshold first."""
        rows = self.file_mask(keys)[self.file_of_row]
        score, window, weight = self.score[rows], self.window[rows], self.weights(cost)[rows]
        order = np.argsort(-score, kind="stable")
        score, window, weight = score[order], window[order], weight[order]
        # How much the raw score moves when each row joins the detections:
        # outside windows by its weight; inside, by how far it lifts the best
        # (earliest) detection of its window.
        gain = np.where(window < 0, weight, 0.0)
        in_window = np.flatnonzero(window >= 0)
        by_window = in_window[np.argsort(window[in_window], kind="stable")]
        ids = window[by_window]
        for seg in np.split(by_window, np.flatnonzero(np.diff(ids)) + 1):
            if seg.size:
                best = np.maximum.accumulate(np.concatenate(([-cost.fn], weight[seg])))
                gain[seg] = np.diff(best)
        base = -cost.fn * np.unique(window[window >= 0]).size
        totals = base + np.cumsum(gain)
        last_of_level = np.flatnonzero(np.append(score[1:] != score[:-1], True))
        top = max(NO_DETECTION, float(np.nextafter(score.max(), np.inf))) if score.size else 1.1
        thresholds = np.concatenate(([top], score[last_of_level]))
        raw = np.concatenate(([base], totals[last_of_level]))
        return thresholds, raw

    def optimise(self, cost: CostMatrix, keys: Sequence[str] | None = None) -> tuple[float, float]:
        """NAB's optimiser: (threshold, raw score) maximising the summed raw score."""
        thresholds, raw = self.sweep(cost, keys)
        best = int(np.argmax(raw))  # the first maximum is the highest threshold
        return float(thresholds[best]), float(raw[best])

    def raw_at(
        self,
        cost: CostMatrix,
        threshold: float | Mapping[str, float],
        keys: Sequence[str] | None = None,
    ) -> float:
        """Raw score at a fixed threshold, or at one threshold per file key."""
        if isinstance(threshold, Mapping):
            per_file = np.array([threshold.get(k, np.inf) for k in self.keys], dtype=np.float64)
        else:
            per_file = np.full(len(self.keys), float(threshold))
        rows = self.file_mask(keys)[self.file_of_row]
        weight = self.weights(cost)
        hit = rows & (self.score >= per_file[self.file_of_row])
        fp = float(weight[hit & (self.window < 0)].sum())
        best = np.full(self.file_of_window.size, -cost.fn)
        tp_hit = hit & (self.window >= 0)
        np.maximum.at(best, self.window[tp_hit], weight[tp_hit])
        scorable = np.zeros(self.file_of_window.size, dtype=bool)
        scorable[self.window[rows & (self.window >= 0)]] = True
        return fp + float(best[scorable].sum())

    def normalise(self, cost: CostMatrix, raw: float, keys: Sequence[str] | None = None) -> float:
        """100 for the perfect detector, 0 for NAB's null detector."""
        files = self.file_mask(keys)
        perfect = cost.tp * float(self.labelled_windows[files].sum())
        null = Corpus(
            self.keys,
            self.file_of_row,
            np.full_like(self.score, NULL_DETECTOR_SCORE),
            self.window,
            self.tp_pos,
            self.fp_pos,
            self.file_of_window,
            self.labelled_windows,
        ).optimise(cost, keys)[1]
        return 100.0 * (raw - null) / (perfect - null)


def build_corpus(results: Results, data_dir: str | Path, labels: Labels) -> Corpus:
    """Line each result file up with its data file and its labelled windows."""
    keys = sorted(results)
    parts: dict[str, list[Any]] = {k: [] for k in ("file", "score", "window", "tp", "fp")}
    file_of_window: list[int] = []
    labelled: list[int] = []
    for f, key in enumerate(keys):
        if key not in labels:
            raise ValueError(f"{key}: no labels for this file")
        stamps, _ = read_csv_column(Path(data_dir) / key, "value")
        got_stamps, got_scores = results[key]
        scores = np.asarray(got_scores, dtype=np.float64)
        if scores.shape != stamps.shape:
            raise ValueError(f"{key}: {scores.size} anomaly scores for {stamps.size} rows")
        if got_stamps is not None:
            given = np.asarray(got_stamps, dtype="datetime64[us]")
            if given.shape != stamps.shape or not np.array_equal(given, stamps):
                raise ValueError(f"{key}: result timestamps differ from the data file's")
        n = stamps.size
        window = np.full(n, -1, dtype=np.int64)
        tp_pos = np.zeros(n)
        fp_pos = np.full(n, np.inf)
        prev_end, prev_width = -1, 0
        for lo, hi in _window_rows(key, stamps, labels[key]):
            width = hi - lo + 1
            rows = np.arange(lo, hi + 1)
            window[lo : hi + 1] = len(file_of_window)
            tp_pos[lo : hi + 1] = -(hi - rows + 1) / width
            if prev_end >= 0:
                gap = np.arange(prev_end + 1, lo)
                fp_pos[prev_end + 1 : lo] = (gap - prev_end) / max(prev_width - 1, 1)
            prev_end, prev_width = hi, width
            file_of_window.append(f)
        if prev_end >= 0:
            tail = np.arange(prev_end + 1, n)
            fp_pos[prev_end + 1 :] = (tail - prev_end) / max(prev_width - 1, 1)
        labelled.append(len(labels[key]))
        keep = np.arange(n) >= probation_rows(n)
        parts["file"].append(np.full(int(keep.sum()), f, dtype=np.int64))
        parts["score"].append(scores[keep])
        parts["window"].append(window[keep])
        parts["tp"].append(tp_pos[keep])
        parts["fp"].append(fp_pos[keep])

    def cat(name: str, dtype: type) -> Any:
        return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=dtype)

    return Corpus(
        keys,
        cat("file", np.int64),
        cat("score", np.float64),
        cat("window", np.int64),
        cat("tp", np.float64),
        cat("fp", np.float64),
        np.array(file_of_window, dtype=np.int64),
        np.array(labelled, dtype=np.int64),
    )


# ---------------------------------------------------------------- front door


def _labels(labels: Labels | str | Path) -> Labels:
    return load_labels(labels) if isinstance(labels, str | Path) else labels


def _profiles(profiles: Profiles | str | Path) -> dict[str, CostMatrix]:
    return cost_matrices(load_profiles(profiles) if isinstance(profiles, str | Path) else profiles)


def score_corpus(
    results: Results,
    data_dir: str | Path,
    labels: Labels | str | Path,
    profiles: Profiles | str | Path,
) -> dict[str, dict[str, float]]:
    """NAB score with the threshold optimised per profile over all files.

    results maps "category/name.csv" to (timestamps or None, anomaly scores);
    labels and profiles are NAB's JSON files or their loaded contents.
    Returns {profile: {"threshold": t, "score": normalised, "raw": raw}}.
    """
    corpus = build_corpus(results, data_dir, _labels(labels))
    out = {}
    for name, cost in _profiles(profiles).items():
        t, raw = corpus.optimise(cost)
        out[name] = {"threshold": t, "score": corpus.normalise(cost, raw), "raw": raw}
    return out


def score_at(
    results: Results,
    data_dir: str | Path,
    labels: Labels | str | Path,
    profiles: Profiles | str | Path,
    thresholds: Mapping[str, float],
) -> dict[str, float]:
    """Normalised NAB score per profile at fixed thresholds {profile: t}."""
    corpus = build_corpus(results, data_dir, _labels(labels))
    costs = _profiles(profiles)
    return {
        name: corpus.normalise(costs[name], corpus.raw_at(costs[name], t))
        for name, t in thresholds.items()
    }


def category(key: str) -> str:
    """The category part of a "category/name.csv" key."""
    return key.split("/", 1)[0]


def leave_one_category_out(corpus: Corpus, cost: CostMatrix) -> tuple[float, dict[str, float]]:
    """Normalised score when each category is scored at the threshold
    optimised on the other categories; also returns those thresholds."""
    categories = sorted({category(k) for k in corpus.keys})
    if len(categories) < 2:
        raise ValueError("leave-one-category-out needs at least two categories")
    per_category = {}
    for c in categories:
        others = [k for k in corpus.keys if category(k) != c]
        per_category[c] = corpus.optimise(cost, others)[0]
    per_file = {k: per_category[category(k)] for k in corpus.keys}
    return corpus.normalise(cost, corpus.raw_at(cost, per_file)), per_category
