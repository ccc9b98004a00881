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

from .model import BlockModel, PostParams
from .records import block_mean_records, envelope_records, range_records
from .state import IntArray, RowPool

Scores = npt.NDArray[np.float64]

_SCALARS = (
    *("count", "base", "bsum", "bmax", "bmin", "lo", "hi", "ref"),
    *("memhi", "memlo", "rref", "mhi", "mlo", "mref", "eref"),  # records (.records)
    *("alast", "alevel"),  # the last reported score: its reading count and level
)
NEVER = -(2**40)  # alast of a stream that has not alarmed yet
# A fresh row's value, where it is not 0.
_EMPTY: dict[str, float] = {"var": 1.0, "svar": 1.0, "alast": NEVER}
_EMPTY.update({"memhi": -np.inf, "memlo": np.inf, "mhi": -np.inf, "mlo": np.inf})
# One column per scale (fine, coarse): novelty statistics, and the sustained
# novelty's statistics.
_PER_SCALE = ("scored", "mean", "var", "sseen", "smean", "svar")
SCALES = 2


class BlockTable(RowPool):
    """Compact state of the streams that share one block model, one row each.

    Per stream: the memory (float32 [M, 3], oldest first; +inf until filled,
    so unfilled places are never a nearest neighbour), the readings seen, the
    running sum/max/min of the current block, the running minimum and maximum
    of every reading seen so far (the scale; causal, never the series'
    future), the running mean, variance and suppression reference of the
    novelty per scale; for the sustained novelty a ring of the last
    ``sustain`` novelties per scale (NaN until valid) and the running count,
    mean and variance of their means; for records the memory's highest
    maximum and lowest minimum, its highest and lowest block mean, and a
    suppression reference for each kind of record; and the reading count and
    level of the last reported score (one alarm per event). Rows are reused
    after a stream is removed; arrays double when full.
    """

    def __init__(self, memory: int, sustain: int = 0, *, capacity: int = 16) -> None:
        self.memory = memory
        self.sustain = sustain
        self.mem = np.full((capacity, memory, 3), np.inf, dtype=np.float32)
        # The last `sustain` range-normalised novelties per scale (NaN: not valid yet).
        self.ring = np.full((capacity, sustain, SCALES), np.nan)
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
        self.eref = np.zeros(capacity)
        self.alast = np.full(capacity, NEVER, dtype=np.int64)
        self.alevel = np.zeros(capacity)
        self.sseen = np.zeros((capacity, SCALES), dtype=np.int64)
        self.smean = np.zeros((capacity, SCALES))
        self.svar = np.ones((capacity, SCALES))
        self.free: list[int] = list(range(capacity - 1, -1, -1))

    @classmethod
    def for_model(cls, model: BlockModel, capacity: int = 16) -> BlockTable:
        """A table laid out for ``model`` (its memory and sustained ring)."""
        return cls(model.memory, model.post.sustain_blocks, capacity=capacity)

    @property
    def capacity(self) -> int:
        return int(self.mem.shape[0])

    def arrays(self) -> list[npt.NDArray[np.generic]]:
        """Every per-stream array (for measuring the state)."""
        return [self.mem, self.ring, *(getattr(self, a) for a in _SCALARS + _PER_SCALE)]

    def adopt(self, other: BlockTable, src: int, dst: int) -> None:
        """Row ``dst`` takes over row ``src`` of ``other`` (another model version's table).

        Every per-stream array the two tables lay out alike is copied (the
        memory, the statistics, the references); one laid out differently (a
        sustained ring of another length) stays fresh and fills as blocks
        complete. Only for tables of the same memory, block and coarse scale.
        """
        if other.memory != self.memory:
            raise ValueError("adopt: the tables' memories differ; the stream must restart")
        for name in ("mem", "ring", *_SCALARS, *_PER_SCALE):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine.shape[1:] == theirs.shape[1:]:
                mine[dst] = theirs[src]

    def reset(self, row: int) -> None:
        self.mem[row] = np.inf
        self.ring[row] = np.nan
        for a in _SCALARS + _PER_SCALE:
            getattr(self, a)[row] = _EMPTY.get(a, 0.0)

    @staticmethod
    def bytes_per_stream(memory: int, sustain: int = 0) -> int:
        """State bytes one stream costs: the memory, the sustained ring, 8-byte scalars."""
        scalars = len(_SCALARS) + SCALES * len(_PER_SCALE)
        return memory * 3 * 4 + sustain * SCALES * 8 + 8 * scalars

    def _grow(self) -> None:
        old = self.capacity
        extra = np.full((old, self.memory, 3), np.inf, dtype=np.float32)
        self.mem = np.concatenate([self.mem, extra])
        self.ring = np.concatenate([self.ring, np.full_like(self.ring, np.nan)])
        for a in _SCALARS + _PER_SCALE:
            arr = getattr(self, a)
            fill = np.full_like(arr, _EMPTY.get(a, 0.0))
            setattr(self, a, np.concatenate([arr, fill]))
        self.free.extend(range(2 * old - 1, old - 1, -1))


def score_block_rows(
    model: BlockModel, table: BlockTable, rows: IntArray, values: npt.NDArray[np.float64]
) -> Scores:
    """Add one reading per row and score it: the largest of the channels, one alarm per event.

    The channels are :func:`score_channels`'; with ``event_readings`` > 0,
    :func:`one_alarm_per_event` then keeps one event from alarming on every
    channel and every block as it unfolds.
    """
    if (table.memory, table.sustain) != (model.memory, model.post.sustain_blocks):
        raise ValueError("this BlockTable is laid out for another model (BlockTable.for_model)")
    out = score_channels(model, table, rows, values)
    if model.post.event_readings > 0:
        out = one_alarm_per_event(table, rows, out, model.post.event_readings)
    return out


def one_alarm_per_event(table: BlockTable, rows: IntArray, scores: Scores, readings: int) -> Scores:
    """Within ``readings`` readings of a reported score, report only a higher one.

    Each channel already suppresses its own repeats; this is across channels
    (a level that leaves its band is a block-mean record, then a novel shape
    a few blocks later: one event, one alarm) and lets an event that grows
    worse alarm again. Causal, two numbers per stream: the reading count and
    the level of the stream's last reported score.
    """
    count = table.count[rows]  # already includes this reading
    last, level = table.alast[rows], table.alevel[rows]
    quiet = (scores > 0) & (count - last <= readings) & (scores <= level)
    out = np.where(quiet, 0.0, scores)
    reported = out > 0
    table.alast[rows] = np.where(reported, count, last)
    table.alevel[rows] = np.where(reported, out, level)
    return out


def score_channels(
    model: BlockModel, table: BlockTable, rows: IntArray, values: npt.NDArray[np.float64]
) -> Scores:
    """Add one reading per row; the largest score of the channels.

    Shape novelty and block-mean records score only when a block completes.

    * Each scale's novelty (the model's nearest-run distance) is divided by
      the stream's range so far, then compared with the stream's own running
      mean and variance of earlier novelties at that scale (exponential,
      ``stats_alpha`` per block): z = max(0, (d - mean) / sd), 0 until the
      scale has ``stats_min_count`` novelties; the larger z of the two scales
      gives the score z / (z + ``score_scale``). A scale whose run does not
      fit in the readings seen yet is skipped.
    * Sustained novelty (when ``sustain_blocks`` > 0): the z of the mean
      novelty of the last ``sustain_blocks`` blocks (:func:`sustained_z`),
      weighted by ``sustain_weight``, joins the larger-z choice. A shape that
      is only a little novel but stays so (a new level, a new rhythm) adds
      up; it shares the suppression below, so the tail of an event already
      reported does not alarm again.
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
    # Is the block's mean within the band of the earlier means (not yet updated)?
    mean_inside = (feat[:, 0] <= table.mhi[r]) & (feat[:, 0] >= table.mlo[r])
    if p.record_scale > 0:
        out[pos] = np.maximum(out[pos], block_mean_records(table, r, feat[:, 0], count[pos], p, s))
    means = mem[:, :, 0]
    filled = np.isfinite(means)  # unfilled places are +inf in every channel
    table.memhi[r] = np.where(filled, mem[:, :, 1], -np.inf).max(axis=1)
    table.memlo[r] = mem[:, :, 2].min(axis=1)
    table.mhi[r] = np.where(filled, means, -np.inf).max(axis=1)
    table.mlo[r] = means.min(axis=1)
    if p.record_scale > 0 and p.envelope_blocks > 0:
        envelope = envelope_records(table, r, mem, count[pos], p, s, mean_inside)
        out[pos] = np.maximum(out[pos], envelope)
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
    if p.sustain_blocks > 0:
        ready_blocks = count[pos] // s - 2 * length
        z = np.maximum(z, p.sustain_weight * sustained_z(table, r, d, valid, ready_blocks, p))
    score = z / (z + p.score_scale)
    # Never let a non-finite score into the reference: it would silence the stream for good.
    score = np.where((count[pos] > p.warmup) & np.isfinite(score), score, 0.0)
    ref = table.ref[r]
    out[pos] = np.maximum(out[pos], np.where(score > ref, score, 0.0))
    longest = max(p.suppress_half_life_max, p.suppress_half_life)
    half_life = np.clip(count[pos] / s, p.suppress_half_life, longest)
    table.ref[r] = np.maximum(ref * 0.5 ** (1.0 / half_life), score)
    table.scored[r], table.mean[r], table.var[r] = running_stats(
        d, valid, seen, mean, var, p.stats_alpha
    )
    return out


def running_stats(
    x: npt.NDArray[np.float64],
    ok: npt.NDArray[np.bool_],
    seen: IntArray,
    mean: npt.NDArray[np.float64],
    var: npt.NDArray[np.float64],
    rate: float,
) -> tuple[IntArray, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One step of an exponential mean and variance, where ``ok`` (elsewhere unchanged).

    The weight is at least 1/seen, so the first values count in full (a plain
    mean) until ``rate`` takes over. ``x`` must be finite where not ok.
    """
    seen = seen + ok
    alpha = np.where(ok, np.maximum(rate, 1.0 / np.maximum(seen, 1)), 0.0)
    delta = x - mean
    var = np.where(ok, (1.0 - alpha) * (var + alpha * delta * delta), var)
    return seen, mean + alpha * delta, var


def sustained_z(
    table: BlockTable,
    rows: IntArray,
    d: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
    ready_blocks: IntArray,
    p: PostParams,
) -> Scores:
    """z of the mean range-normalised novelty of the last ``sustain_blocks`` blocks.

    Per scale, the mean is compared with the stream's own long-run mean and
    variance of such means (exponential, rate ``sustain_alpha``, like the
    long window of an anomaly likelihood), the standard deviation widened by
    ``sustain_sd_floor`` (a fraction of the stream's range, added in
    quadrature, so a stream whose means never vary is not infinitely
    sensitive): 0 until the ring holds ``sustain_blocks`` valid novelties
    and ``sustain_min_count`` means have been seen. Returns the larger z of the scales, at least 0.
    """
    ring = table.ring[rows]
    ring[np.arange(len(rows)), ready_blocks % table.sustain] = np.where(valid, d, np.nan)
    table.ring[rows] = ring
    m = ring.mean(axis=1)  # NaN unless all are valid
    ok = np.isfinite(m)
    m = np.where(ok, m, 0.0)
    seen, mean, var = table.sseen[rows], table.smean[rows], table.svar[rows]
    sd = np.sqrt(var + p.sustain_sd_floor**2 + 1e-12)
    z = np.where(ok & (seen >= p.sustain_min_count), (m - mean) / sd, 0.0)
    table.sseen[rows], table.smean[rows], table.svar[rows] = running_stats(
        m, ok, seen, mean, var, p.sustain_alpha
    )
    return np.asarray(np.maximum(z, 0.0).max(axis=1), dtype=np.float64)
