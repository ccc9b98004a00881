"""Factories for the NAB harness: ``make()`` and ``make_batch(n)``.

Register ``cityedge.anomaly.nab:make`` (and ``make_batch``) in the harness.
The model folder is ``$CITYEDGE_MODELS`` or the repository's ``models/``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .engine import AnomalyEngine
from .model import AnyModel, load_model

# The shipped models do not use time; the batch path skips converting datetime64.
_NO_TIME = datetime(1970, 1, 1)

DEFAULT_MODEL = "block_novelty"


def default_model_dir() -> Path:
    """$CITYEDGE_MODELS, the source tree's models/, or the installed share/cityedge/models."""
    env = os.environ.get("CITYEDGE_MODELS")
    if env:
        return Path(env)
    tree = Path(__file__).resolve().parents[2] / "models"
    if tree.is_dir():
        return tree
    return Path(sys.prefix) / "share" / "cityedge" / "models"


class Detector:
    """One stream, one reading at a time (what NAB's rules assume)."""

    def __init__(self, engine: AnomalyEngine | None = None, model: str = DEFAULT_MODEL) -> None:
        self.engine = engine or AnomalyEngine(default_model_dir())
        self.engine.add_stream(0, model)

    def step(self, timestamp: datetime, value: float) -> float:
        return self.engine.step([(0, timestamp, value)])[0][1]


class BatchDetector:
    """``n`` independent streams scored together, one session call per tick."""

    def __init__(self, n: int, model: str = DEFAULT_MODEL, model_dir: Path | None = None) -> None:
        self.n = n
        self.engine = AnomalyEngine(model_dir or default_model_dir())
        for i in range(n):
            self.engine.add_stream(i, model)

    def step_batch(
        self,
        timestamps: Sequence[datetime] | npt.NDArray[np.datetime64],
        values: Sequence[float] | npt.NDArray[np.float64],
        active: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Scores for stream i's reading ``values[i]``; inactive streams are untouched (0)."""
        if len(values) != self.n or len(timestamps) != self.n:
            raise ValueError(f"expected {self.n} readings, got {len(values)}")
        on = range(self.n) if active is None else [i for i in range(self.n) if active[i]]
        batch = [(i, _NO_TIME, float(values[i])) for i in on]
        scores = np.zeros(self.n)
        for pos, (_key, s) in zip(on, self.engine.step(batch), strict=True):
            scores[pos] = s
        return scores


@functools.cache
def _loaded(model_dir: Path, model: str) -> AnyModel:
    """One session for the shipped thresholds and their provenance (the harness asks both)."""
    return load_model(model_dir, model)


def _shipped(model: str) -> AnyModel:
    return _loaded(default_model_dir(), model)


def shipped_thresholds(model: str = DEFAULT_MODEL) -> dict[str, float]:
    """The model's shipped threshold per NAB profile (from its metadata)."""
    return dict(_shipped(model).thresholds)


def calibrated_on(model: str = DEFAULT_MODEL) -> str | None:
    """SHA-256 of the NAB labels file the shipped thresholds were fitted on, if any."""
    return _shipped(model).thresholds_labels_sha256


def __getattr__(name: str) -> object:
    # Read lazily so importing this module loads no session.
    if name == "THRESHOLDS":
        return shipped_thresholds()
    if name == "CALIBRATED_ON":
        return calibrated_on()
    raise AttributeError(name)


def make() -> Detector:
    return Detector()


def make_batch(n: int, model_dir: Path | None = None) -> BatchDetector:
    """``n`` streams of the default model, from ``model_dir`` (default: the shipped one)."""
    return BatchDetector(n, model_dir=model_dir)
