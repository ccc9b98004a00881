"""From raw model outputs to scores in [0, 1]: normalisation, warm-up, suppression.

All functions work on the rows of one batch at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .model import PostParams
from .state import IntArray, StreamTable

Scores = npt.NDArray[np.float64]


def score_rows(
    table: StreamTable, rows: IntArray, raw: npt.NDArray[np.float32], p: PostParams
) -> Scores:
    """Score the rows' current readings, then update their running state.

    * The raw output is compared with the stream's own running mean and
      variance of earlier outputs (exponential, weight ``stats_alpha``), so a
      noisy stream and a quiet one share one threshold.
    * Only the exceedance counts: ``z / (z + score_scale)`` maps it into [0, 1).
    * Warm-up: for the first ``warmup`` readings the score is 0.
    * Suppression: a score is reported only when it beats the stream's
      reference, the largest recent score decaying with ``suppress_half_life``
      readings; otherwise 0. One event thus fires once, at its onset, which is
      what an operator (and NAB) wants.
    """
    r = raw.astype(np.float64)
    count = table.count[rows]  # already includes the current reading
    mean = table.mean[rows]
    var = table.var[rows]
    seen = count - 1
    z = np.where(seen >= p.stats_min_count, (r - mean) / np.sqrt(var + 1e-12), 0.0)
    z = np.maximum(z, 0.0)
    score = z / (z + p.score_scale)
    score = np.where(count > p.warmup, score, 0.0)
    ref = table.ref[rows]
    out = np.where(score > ref, score, 0.0)
    decay = 0.5 ** (1.0 / p.suppress_half_life)
    table.ref[rows] = np.maximum(ref * decay, score)
    alpha = np.maximum(p.stats_alpha, 1.0 / count)
    d = r - mean
    table.mean[rows] = mean + alpha * d
    table.var[rows] = (1.0 - alpha) * (var + alpha * d * d)
    return out
