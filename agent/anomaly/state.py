"""Per-stream state kept as rows of a few preallocated arrays (no object per stream)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.intp]


class RowPool:
    """Rows of per-stream arrays, handed out and reused; a subclass resets and grows them."""

    free: list[int]  # rows not in use, the next one last

    def allocate(self) -> int:
        if not self.free:
            self._grow()
        row = self.free.pop()
        self.reset(row)
        return row

    def release(self, row: int) -> None:
        self.reset(row)
        self.free.append(row)

    def reset(self, row: int) -> None:
        raise NotImplementedError

    def _grow(self) -> None:
        raise NotImplementedError


class StreamTable(RowPool):
    """Compact state of the streams that share one model.

    Each stream owns one row: its window of the last W readings (float32,
    oldest first), the number of readings seen, the running mean and variance
    of the model's output, and the suppression reference. Rows are reused
    after a stream is removed; the arrays double when full.
    """

    def __init__(self, window: int, capacity: int = 16) -> None:
        self.window = window
        self.buf = np.zeros((capacity, window), dtype=np.float32)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.mean = np.zeros(capacity, dtype=np.float64)
        self.var = np.ones(capacity, dtype=np.float64)
        self.ref = np.zeros(capacity, dtype=np.float64)
        self.free: list[int] = list(range(capacity - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return int(self.buf.shape[0])

    def reset(self, row: int) -> None:
        self.buf[row] = 0.0
        self.count[row] = 0
        self.mean[row] = 0.0
        self.var[row] = 1.0
        self.ref[row] = 0.0

    def push(self, rows: IntArray, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Append one reading per row; return the updated windows [len(rows), W].

        A stream's first reading fills its whole window, so a new stream's
        window holds only readings it has seen (never zeros, never the future).
        """
        first = self.count[rows] == 0
        if first.any():
            self.buf[rows[first]] = values[first, None]
        win = np.empty((len(rows), self.window), dtype=np.float32)
        win[:, :-1] = self.buf[rows, 1:]
        win[:, -1] = values
        self.buf[rows] = win
        self.count[rows] += 1
        return win

    @staticmethod
    def bytes_per_stream(window: int) -> int:
        """State bytes one stream costs: window, count, mean, var, ref."""
        return window * 4 + 8 * 4

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2
        self.buf = np.concatenate([self.buf, np.zeros((old, self.window), np.float32)])
        self.count = np.concatenate([self.count, np.zeros(old, np.int64)])
        self.mean = np.concatenate([self.mean, np.zeros(old)])
        self.var = np.concatenate([self.var, np.ones(old)])
        self.ref = np.concatenate([self.ref, np.zeros(old)])
        self.free.extend(range(new - 1, old - 1, -1))
