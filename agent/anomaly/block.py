"""State and scoring for block models (``block_novelty``): memories of block summaries.

A stream's readings are grouped in blocks of ``s`` readings. Each completed
block adds its (mean, maximum, minimum) to the stream's memory of the last M
blocks; the model then measures how far the last L blocks are from the
nearest earlier run of L blocks (shape novelty over ``s * L`` readings,
compared with ``s * M`` readings of history), and the same for runs of L
groups of ``coarse`` blocks (context over ``s * L * coarse`` readings).
Only the streams whose block completed are sent to the model, in one session
call per tick.

Records (:mod:`cityedge.anomaly.records`): every reading is also checked
against the range of the memory, and every completed block's mean against the
block means in the memory. A value or a level the stream has not come near in
``s * M`` readings is what a failing pump, a stuck valve or a burst pipe looks
like first. A reading's score is the largest of its scores.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .model import BlockModel
from .records import block_mean_records, range_records
from .state import IntArray, RowPool

Scores = npt.NDArray[np.float64]

_SCALARS = (
    *("count", "base", "bsum", "bmax", "bmin", "lo", "hi", "ref"),
    *("memhi", "memlo", "rref", "mhi", "mlo", "mref"),  # records (cityedge.anomaly.records)
)
# A fresh row's value, where it is not 0.
_EMPTY = {"var": 1.0, "memhi": -np.inf, "memlo": np.inf, "mhi": -np.inf, "mlo": np.inf}
_PER_SCALE = ("scored", "mean", "var")  # one column per scale (fine, coarse)
SCALES = 2


class BlockTable(RowPool):
    """Compact state of the streams that share one block model, one row each.

    Per stream: the memory (float32 [M, 3], oldest first; +inf until filled,
    so unfilled places are never a nearest neighbour), the readings seen, the
    running sum/max/min of the current block, the running minimum and maximum
    of every reading seen so far (the scale; causal, never the series'
    future), the running mean, variance and suppression reference of the
    novelty per scale, and for records the memory's highest maximum and
    lowest minimum, its highest and lowest block mean, and a suppression
    reference for each kind of record. Rows are reused after a stream is removed; arrays
    double when full.
    """

    def __init__(self, memory: int, capacity: int = 16) -> None:
        self.memory = memory
        self.mem = np.full((capacity, memory, 3), np.inf, dtype=np.float32)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.base = np.zeros(capacity)
        self.scored = np.zeros((capacity, SCALES), dtype=np.int64)
        self.bsum = np.zeros(capacity)
        self.bmax = np.zeros(capacity)
        self.bmin = np.zeros(capacity)
        self.lo = np.zeros(capacity)
        self.hi = np.zeros(capacity)
        self.mean = np.zeros((capacity, SCALES))
        self.var = np.ones((capacity, SCALES))
        self.ref = np.zeros(capacity)
        self.memhi = np.full(capacity, -np.inf)
        self.memlo = np.full(capacity, np.inf)
        self.rref = np.zeros(capacity)
        self.mhi = np.full(capacity, -np.inf)
        self.mlo = np.full(capacity, np.inf)
        self.mref = np.zeros(capacity)
        self.free: list[int] = list(range(capacity - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return int(self.mem.shape[0])

    def arrays(self) -> list[npt.NDArray[np.generic]]:
        """Every per-stream array (for measuring the state)."""
        return [self.mem, *(getattr(self, a) for a in _SCALARS + _PER_SCALE)]

    def reset(self, row: int) -> None:
        self.mem[row] = np.inf
        for a in _SCALARS + _PER_SCALE:
            getattr(self, a)[row] = _EMPTY.get(a, 0.0)

    @staticmethod
    def bytes_per_stream(memory: int) -> int:
        """State bytes one stream costs: the memory and 20 8-byte scalars."""
        return memory * 3 * 4 + 8 * (len(_SCALARS) + SCALES * len(_PER_SCALE))

    def _grow(self) -> None:
        old = self.capacity
        extra = np.full((old, self.memory, 3), np.inf, dtype=np.float32)
        self.mem = np.concatenate([self.mem, extra])
        for a in _SCALARS + _PER_SCALE:
            arr = getattr(self, a)
            fill = np.full_like(arr, _EMPTY.get(a, 0.0))
            setattr(self, a, np.concatenate([arr, fill]))
        self.free.extend(range(2 * old - 1, old - 1, -1))


def score_block_rows(
    model: BlockModel, table: BlockTable, rows: IntArray, values: npt.NDArray[np.float64]
) -> Scores:
    """Add one reading per row, score the rows whose block completed (others 0).

    * Each scale's novelty (the model's nearest-run distance) is divided by
      the stream's range so far, then compared with the stream's own running
      mean and variance of earlier novelties at that scale (exponential,
      ``stats_alpha`` per block): z = max(0, (d - mean) / sd), 0 until the
      scale has ``stats_min_count`` novelties; the larger z of the two scales
      gives the score z / (z + ``score_scale``). A scale whose run does not
      fit in the readings seen yet is skipped.
    * Warm-up: 0 until ``warmup`` readings.
    * Suppression: a score is reported only when it beats the stream's
      reference, the largest recent score decaying with a half-life of as
      many blocks as the stream has lived, at least ``suppress_half_life``
      and at most ``suppress_half_life_max``: a rarer (higher) event silences
      the stream for longer, and the longer a stream has been watched, the
      rarer an event must be to alarm again.
    * Records (when the model's ``record_scale`` > 0): every reading is
      checked against the range of the memory (:func:`range_records`), every
      completed block's mean against the means in the memory
      (:func:`block_mean_records`); the reported score is the largest.
    """
    p = model.post
    s, length = model.block, model.length
    count = table.count[rows]
    # Everything is kept relative to the stream's first reading: the float32
    # memory then resolves small changes on a large offset (a latitude, a
    # meter's total), and distances and records do not depend on the offset.
    base = np.where(count == 0, values, table.base[rows])
    table.base[rows] = base
    values = values - base
    first_in_block = count % s == 0
    out = range_records(table, rows, values, first_in_block, count, p)
    table.bsum[rows] = np.where(first_in_block, values, table.bsum[rows] + values)
    table.bmax[rows] = np.where(first_in_block, values, np.maximum(table.bmax[rows], values))
    table.bmin[rows] = np.where(first_in_block, values, np.minimum(table.bmin[rows], values))
    new = count == 0
    table.lo[rows] = np.where(new, values, np.minimum(table.lo[rows], values))
    table.hi[rows] = np.where(new, values, np.maximum(table.hi[rows], values))
    count = count + 1
    table.count[rows] = count
    done = count % s == 0
    if not done.any():
        return out
    pos = np.flatnonzero(done)
    r = rows[pos]
    feat = np.stack([table.bsum[r] / s, table.bmax[r], table.bmin[r]], axis=1)
    mem = table.mem[r]
    mem[:, :-1] = mem[:, 1:]
    mem[:, -1] = feat
    table.mem[r] = mem
    # The record state is kept whatever the model, so a model installed later
    # with records on starts from the true memory, not from an empty one.
    if p.record_scale > 0:
        out[pos] = np.maximum(out[pos], block_mean_records(table, r, feat[:, 0], count[pos], p, s))
    means = mem[:, :, 0]
    filled = np.isfinite(means)  # unfilled places are +inf in every channel
    table.memhi[r] = np.where(filled, mem[:, :, 1], -np.inf).max(axis=1)
    table.memlo[r] = mem[:, :, 2].min(axis=1)
    table.mhi[r] = np.where(filled, means, -np.inf).max(axis=1)
    table.mlo[r] = means.min(axis=1)
    ready = count[pos] // s >= 2 * length
    if not ready.any():
        return out
    pos, r, mem = pos[ready], r[ready], mem[ready]
    scale = table.hi[r] - table.lo[r] + 1e-9 * (1.0 + np.abs(table.hi[r]))
    d = model.run(np.ascontiguousarray(mem)).astype(np.float64) / scale[:, None]
    valid = np.isfinite(d)
    d = np.where(valid, d, 0.0)
    seen = table.scored[r]
    mean, var = table.mean[r], table.var[r]
    ok = valid & (seen >= p.stats_min_count)
    z = np.where(ok, (d - mean) / np.sqrt(var + 1e-12), 0.0)
    z = np.maximum(z, 0.0).max(axis=1)
    score = z / (z + p.score_scale)
    score = np.where(count[pos] > p.warmup, score, 0.0)
    ref = table.ref[r]
    out[pos] = np.maximum(out[pos], np.where(score > ref, score, 0.0))
    longest = max(p.suppress_half_life_max, p.suppress_half_life)
    half_life = np.clip(count[pos] / s, p.suppress_half_life, longest)
    table.ref[r] = np.maximum(ref * 0.5 ** (1.0 / half_life), score)
    seen = seen + valid
    alpha = np.where(valid, np.maximum(p.stats_alpha, 1.0 / np.maximum(seen, 1)), 0.0)
    delta = d - mean
    table.mean[r] = mean + alpha * delta
    table.var[r] = np.where(valid, (1.0 - alpha) * (var + alpha * delta * delta), var)
    table.scored[r] = seen
    return out
