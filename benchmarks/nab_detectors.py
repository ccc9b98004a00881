"""Detectors the NAB harness can run: name -> how to build one.

The contract (docs/nab.md has the long form):

* ``make() -> Detector``; ``Detector.step(timestamp, value) -> float`` is called
  once per row, in order, and returns an anomaly score in [0, 1] before it sees
  the next row. One Detector object watches one series.
* Optionally ``make_batch(n_streams) -> BatchDetector``;
  ``BatchDetector.step_batch(timestamps, values, active) -> scores`` advances
  all streams by one tick. The arrays have length n_streams: timestamps are
  ``datetime64[us]``, values ``float64``, active ``bool``. Series end at
  different ticks: an inactive stream carries NaT / NaN, must keep its state
  untouched, and its score is ignored.
* Optionally ``thresholds``: the detection threshold per NAB profile that ships
  with the detector (from its model card or a constant), used by
  ``--thresholds-from fixed``.

Entries are loaders, so a detector's imports (onnxruntime, models) happen only
when it is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Detector(Protocol):
    def step(self, timestamp: datetime, value: float) -> float: ...


class BatchDetector(Protocol):
    def step_batch(
        self,
        timestamps: npt.NDArray[np.datetime64],
        values: npt.NDArray[np.float64],
        active: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class DetectorSpec:
    """How the harness builds and judges one detector."""

    make: Callable[[], Detector]
    make_batch: Callable[[int], BatchDetector] | None = None
    thresholds: Mapping[str, float] | None = None  # shipped, per NAB profile
    # SHA-256 of the labels file the shipped thresholds were fitted on: on that
    # data a fixed-threshold score would be in-sample (the harness says so).
    calibrated_on: str | None = None


# ---------------------------------------------------------------- null


class NullDetector:
    """Never alarms: scores 0 for every row (NAB normalises this to 0)."""

    def step(self, timestamp: datetime, value: float) -> float:
        return 0.0


class NullBatch:
    def __init__(self, n_streams: int) -> None:
        self._zeros = np.zeros(n_streams)

    def step_batch(
        self,
        timestamps: npt.NDArray[np.datetime64],
        values: npt.NDArray[np.float64],
        active: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float64]:
        return self._zeros


# ---------------------------------------------------------------- zscore

# An exponentially weighted mean and variance; each value is judged against the
# statistics of the values before it, then folded in. |z| maps to [0, 1) by
# 1 - exp(-|z| / Z_SCALE); the first WARMUP rows score 0.
ALPHA = 0.01
WARMUP = 50
Z_SCALE = 4.0
VAR_FLOOR = 1e-12


class ZScoreDetector:
    """Causal z-score against exponentially weighted statistics (a baseline)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def step(self, timestamp: datetime, value: float) -> float:
        score = 0.0
        if self.n == 0:
            self.mean = value
        else:
            dev = value - self.mean
            if self.n >= WARMUP:
                z = abs(dev) / math.sqrt(self.var + VAR_FLOOR)
                score = 1.0 - math.exp(-z / Z_SCALE)
            self.mean += ALPHA * dev
            self.var = (1.0 - ALPHA) * (self.var + ALPHA * dev * dev)
        self.n += 1
        return score


class ZScoreBatch:
    """ZScoreDetector over many streams at once, state in flat arrays."""

    def __init__(self, n_streams: int) -> None:
        self.n = np.zeros(n_streams, dtype=np.int64)
        self.mean = np.zeros(n_streams)
        self.var = np.zeros(n_streams)

    def step_batch(
        self,
        timestamps: npt.NDArray[np.datetime64],
        values: npt.NDArray[np.float64],
        active: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float64]:
        first = active & (self.n == 0)
        self.mean = np.where(first, values, self.mean)
        later = active & (self.n > 0)
        dev = np.where(later, values - self.mean, 0.0)
        z = np.abs(dev) / np.sqrt(self.var + VAR_FLOOR)
        score = np.where(later & (self.n >= WARMUP), 1.0 - np.exp(-z / Z_SCALE), 0.0)
        self.mean = np.where(later, self.mean + ALPHA * dev, self.mean)
        self.var = np.where(later, (1.0 - ALPHA) * (self.var + ALPHA * dev * dev), self.var)
        self.n += active
        return score


# ---------------------------------------------------------------- registry


def _null() -> DetectorSpec:
    return DetectorSpec(NullDetector, NullBatch)


def _zscore() -> DetectorSpec:
    return DetectorSpec(ZScoreDetector, ZScoreBatch)


def _cityedge() -> DetectorSpec:
    # The agent's own detector (agent/anomaly); imported only when chosen, so
    # the baselines run without onnxruntime.
    from cityedge.anomaly import nab as agent_nab

    return DetectorSpec(
        agent_nab.make,
        agent_nab.make_batch,
        getattr(agent_nab, "THRESHOLDS", None),
        getattr(agent_nab, "CALIBRATED_ON", None),
    )


REGISTRY: dict[str, Callable[[], DetectorSpec]] = {
    "null": _null,
    "zscore": _zscore,
    "cityedge": _cityedge,
}


def get(name: str) -> DetectorSpec:
    """The detector registered under name; KeyError lists the known ones."""
    try:
        loader = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return loader()
