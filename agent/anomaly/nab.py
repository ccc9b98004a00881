"""Factories for the NAB harness: ``make()`` and ``make_batch(n)``.

Register ``cityedge.anomaly.nab:make`` (and ``make_batch``) in the harness.
The model folder is ``$CITYEDGE_MODELS`` or the repository's ``models/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from .engine import AnomalyEngine

DEFAULT_MODEL = "window_novelty"


def default_model_dir() -> Path:
    env = os.environ.get("CITYEDGE_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


class Detector:
    """One stream, one reading at a time (what NAB's rules assume)."""

    def __init__(self, engine: AnomalyEngine | None = None, model: str = DEFAULT_MODEL) -> None:
        self.engine = engine or AnomalyEngine(default_model_dir())
        self.engine.add_stream(0, model)

    def step(self, timestamp: datetime, value: float) -> float:
        return self.engine.step([(0, timestamp, value)])[0][1]


class BatchDetector:
    """``n`` independent streams scored together, one session call per tick."""

    def __init__(self, n: int, model: str = DEFAULT_MODEL) -> None:
        self.n = n
        self.engine = AnomalyEngine(default_model_dir())
        for i in range(n):
            self.engine.add_stream(i, model)

    def step_batch(self, timestamps: Sequence[datetime], values: Sequence[float]) -> list[float]:
        """Scores for stream i's reading ``values[i]``; len must equal ``n``."""
        if len(values) != self.n or len(timestamps) != self.n:
            raise ValueError(f"expected {self.n} readings, got {len(values)}")
        batch = [(i, timestamps[i], float(values[i])) for i in range(self.n)]
        return [s for _k, s in self.engine.step(batch)]


def make() -> Detector:
    return Detector()


def make_batch(n: int) -> BatchDetector:
    return BatchDetector(n)
