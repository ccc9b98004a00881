"""Record scores of block models: a reading or a block mean beyond what the memory holds.

Both are scale-free (a fraction of the memory's own range), need no training,
and cost a few numpy operations per tick over all streams at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .model import PostParams
from .state import IntArray

if TYPE_CHECKING:
    from .block import BlockTable

Scores = npt.NDArray[np.float64]


def range_records(
    table: BlockTable,
    rows: IntArray,
    values: npt.NDArray[np.float64],
    first_in_block: npt.NDArray[np.bool_],
    count: IntArray,
    p: PostParams,
) -> Scores:
    """Range-record scores of the rows' readings, before they join their block.

    The range is the memory's (``memhi``, ``memlo``) widened by the readings
    of the current block so far; e = how far the reading lies beyond it, as a
    fraction of its width; score e / (e + ``record_scale``), 0 during the
    warm-up or while the range is empty or zero. Reported only when it beats
    the stream's reference (its largest recent record score decaying with
    ``record_half_life`` readings), so a drift past old extremes alarms once,
    not at every reading.
    """
    if p.record_scale <= 0:
        return np.zeros(len(rows))
    memhi, memlo = table.memhi[rows], table.memlo[rows]
    hi = np.where(first_in_block, memhi, np.maximum(memhi, table.bmax[rows]))
    lo = np.where(first_in_block, memlo, np.minimum(memlo, table.bmin[rows]))
    width = hi - lo
    ok = np.isfinite(width) & (width > 0) & (count + 1 > p.warmup)
    safe = np.where(ok, width, 1.0)
    beyond = np.maximum(np.maximum(values - hi, lo - values), 0.0) / safe
    e = np.where(ok, beyond, 0.0)
    score = e / (e + p.record_scale)
    ref = table.rref[rows]
    table.rref[rows] = np.maximum(ref * 0.5 ** (1.0 / p.record_half_life), score)
    return np.where(score > ref, score, 0.0)


def block_mean_records(
    table: BlockTable,
    rows: IntArray,
    means: npt.NDArray[np.float64],
    count: IntArray,
    p: PostParams,
    block: int,
) -> Scores:
    """Mean-record scores of blocks that just completed, before they join the memory.

    e = how far the block's mean lies beyond the highest and lowest block
    mean in the memory, as a fraction of the memory's range of readings
    (``memhi - memlo``); score e / (e + ``record_scale``), 0 during the
    warm-up or while the memory is empty. It catches a level that leaves its
    usual band without any single reading leaving the range (a pump running
    hot, a counter stuck high). Suppressed like range records, with its own
    reference decaying with ``record_half_life`` readings (``block`` per call).
    """
    width = table.memhi[rows] - table.memlo[rows]
    hi, lo = table.mhi[rows], table.mlo[rows]
    ok = np.isfinite(width) & (width > 0) & (count > p.warmup)
    safe = np.where(ok, width, 1.0)
    beyond = np.maximum(np.maximum(means - hi, lo - means), 0.0) / safe
    e = np.where(ok, beyond, 0.0)
    score = e / (e + p.record_scale)
    ref = table.mref[rows]
    table.mref[rows] = np.maximum(ref * 0.5 ** (block / p.record_half_life), score)
    return np.where(score > ref, score, 0.0)


def envelope_records(
    table: BlockTable,
    rows: IntArray,
    mem: npt.NDArray[np.float32],
    count: IntArray,
    p: PostParams,
    block: int,
    mean_inside: npt.NDArray[np.bool_],
) -> Scores:
    """Envelope-record scores of blocks that just completed (already the memory's last place).

    Over the last K = ``envelope_blocks`` blocks, the lowest block maximum
    (the peaks' floor) and the highest block minimum (the troughs' ceiling)
    are compared with the same figures of every earlier run of K blocks in
    the memory that does not overlap them: e = how far the peaks' floor lies
    above the highest earlier floor, or the troughs' ceiling below the lowest
    earlier ceiling, as a fraction of the memory's range of readings; score
    e / (e + ``record_scale``). It catches excursions that come back block
    after block higher (or lower) than ever while the level stays in its
    band: a valve that starts to chatter, a load that peaks on every cycle.

    Only where ``mean_inside`` (the block's mean lies within the band of the
    earlier block means: a level that leaves its band is a block-mean
    record's event, not this one's), after the warm-up, and once the memory
    holds ``envelope_history`` earlier runs (records among few runs are
    chance). Suppressed with its own reference (``eref``), half-life
    ``envelope_half_life`` readings: a record of a noisy envelope is rare
    but not an event each time.
    """
    k = p.envelope_blocks
    starts = mem.shape[1] - k + 1  # runs of k blocks in the memory
    peaks, troughs = mem[:, :, 1], mem[:, :, 2]
    floor = peaks[:, :starts].copy()  # lowest block maximum of each run
    ceiling = troughs[:, :starts].copy()  # highest block minimum of each run
    for i in range(1, k):
        np.minimum(floor, peaks[:, i : i + starts], out=floor)
        np.maximum(ceiling, troughs[:, i : i + starts], out=ceiling)
    # Unfilled places (+inf) come first in the memory: a run is whole when its first block is.
    whole = np.isfinite(mem[:, :starts, 0])
    earlier = slice(0, starts - k)  # runs that end before the last run starts
    hist_floor = np.where(whole[:, earlier], floor[:, earlier], -np.inf).max(axis=1)
    hist_ceiling = np.where(whole[:, earlier], ceiling[:, earlier], np.inf).min(axis=1)
    width = table.memhi[rows] - table.memlo[rows]
    ok = (
        mean_inside
        & (whole[:, earlier].sum(axis=1) >= p.envelope_history)
        & np.isfinite(width)
        & (width > 0)
        & (count > p.warmup)
    )
    safe = np.where(ok, width, 1.0)
    # Where not ok, the figures may be infinite: 0 instead, so nothing is inf - inf.
    up = np.where(ok, floor[:, -1], 0.0) - np.where(ok, hist_floor, 0.0)
    down = np.where(ok, hist_ceiling, 0.0) - np.where(ok, ceiling[:, -1], 0.0)
    e = np.maximum(np.maximum(up, down), 0.0) / safe
    score = e / (e + p.record_scale)
    ref = table.eref[rows]
    table.eref[rows] = np.maximum(ref * 0.5 ** (block / p.envelope_half_life), score)
    return np.where(score > ref, score, 0.0)
