"""Incremental stream framers for serial sensors. Pure: bytes in, frames out.

A UART delivers a byte stream in arbitrary pieces: a frame may be torn
across reads, a sensor may start talking mid-frame, noise may corrupt bytes.
A framer is fed whatever the port returned and hands back, in stream order,
each complete sound :class:`Frame` and a :class:`Rejection` for every bad
frame or run of garbage. It never raises and its buffer never holds more
than one frame's worth of bytes, whatever it is fed.

Resync rule: after a frame fails its checks the framer drops only the first
start byte and scans again, so a frame that swallowed the head of the next
one (a byte lost on the line) does not cost the next frame too. Bytes of an
already rejected frame are not reported a second time as garbage.

Reason slugs: ``garbage`` (bytes outside any frame), ``bad_length`` (length
field or line length out of range), ``bad_checksum``, ``bad_tail`` (wrong
end byte, or a line cut off by the start of the next).
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cityedge.drivers.serial import nmea, pms5003, sds011

HEAD_KEPT = 64
"""How many bytes of a rejected run a Rejection keeps for the log."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame (binary) or line (text, without CR LF) that passed its checks."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """Bytes the framer threw away: why, how many, and the first of them."""

    reason: str
    size: int
    head: bytes


Item = Frame | Rejection


class Framer(abc.ABC):
    """Base of every framer: a bounded buffer, counters, and the garbage bookkeeping."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.frames = 0
        self.rejected: Counter[str] = Counter()
        self._buf = bytearray()
        self._quiet = 0  # leading buffer bytes that belong to an already reported rejection
        self._garbage = 0
        self._garbage_head = b""
        self._out: list[Item] = []

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (at most ``max_size``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        """Take the next bytes from the port; return the frames and rejections they complete."""
        self._buf += data
        self._out = []
        self._scan()
        self._flush_garbage()
        out, self._out = self._out, []
        return out

    @abc.abstractmethod
    def _scan(self) -> None:
        """Consume as much of ``_buf`` as can be decided now."""

    def _drop(self, count: int, *, silent: bool = False) -> None:
        """Remove ``count`` leading bytes, counting those not already reported as garbage."""
        loud = 0 if silent else max(0, count - self._quiet)
        chunk = bytes(self._buf[count - loud : count])
        self._quiet = max(0, self._quiet - count)
        del self._buf[:count]
        if loud and self._counts_as_garbage(chunk):
            if not self._garbage:
                self._garbage_head = chunk[:HEAD_KEPT]
            self._garbage += loud

    def _counts_as_garbage(self, chunk: bytes) -> bool:
        return True

    def _flush_garbage(self) -> None:
        if self._garbage:
            self._emit(Rejection("garbage", self._garbage, self._garbage_head))
            self._garbage, self._garbage_head = 0, b""

    def _emit(self, item: Item) -> None:
        if isinstance(item, Frame):
            self.frames += 1
        else:
            self.rejected[item.reason] += 1
        self._out.append(item)

    def _accept(self, size: int) -> None:
        self._flush_garbage()
        self._emit(Frame(bytes(self._buf[:size])))
        self._quiet = max(0, self._quiet - size)
        del self._buf[:size]

    def _reject(self, reason: str, size: int) -> None:
        """Reject the frame at the head of the buffer and resync one byte later."""
        if self._quiet == 0:  # a false start inside a reported frame is not a new fault
            self._flush_garbage()
            self._emit(Rejection(reason, size, bytes(self._buf[: min(size, HEAD_KEPT)])))
            self._quiet = size
        self._drop(1, silent=True)


def _partial_start(buf: bytearray, start: bytes) -> int:
    """Length of the longest tail of ``buf`` that could begin ``start``."""
    for n in range(min(len(start) - 1, len(buf)), 0, -1):
        if buf.endswith(start[:n]):
            return n
    return 0


class BinaryFramer(Framer):
    """Frames that begin with fixed start bytes and whose size the header tells.

    ``size_of`` gets the first ``header_size`` bytes and returns the frame size,
    ``"garbage"`` for a false start (merged into the garbage run) or another
    reason slug to reject; ``check`` gets the complete frame and returns a reason
    slug or None.
    """

    def __init__(
        self,
        start: bytes,
        header_size: int,
        max_size: int,
        size_of: Callable[[bytes], int | str],
        check: Callable[[bytes], str | None],
    ) -> None:
        if not start or header_size < len(start) or max_size < header_size:
            raise ValueError("start bytes, header size and max size do not fit")
        super().__init__(max_size)
        self.start = start
        self.header_size = header_size
        self._size_of = size_of
        self._check = check

    def _scan(self) -> None:
        while True:
            i = self._buf.find(self.start)
            if i < 0:
                self._drop(len(self._buf) - _partial_start(self._buf, self.start))
                return
            self._drop(i)
            if len(self._buf) < self.header_size:
                return
            size = self._size_of(bytes(self._buf[: self.header_size]))
            if size == "garbage":
                self._drop(1)
                continue
            if isinstance(size, str) or not self.header_size <= size <= self.max_size:
                self._reject(size if isinstance(size, str) else "bad_length", self.header_size)
                continue
            if len(self._buf) < size:
                return
            problem = self._check(bytes(self._buf[:size]))
            if problem is None:
                self._accept(size)
            else:
                self._reject(problem, size)


class LineFramer(Framer):
    """Text lines ending in LF (CR stripped), optionally starting with a start byte.

    ``eol`` is the end-of-line byte: LF by default (which takes CR LF too);
    CR for sensors that end each line with a bare carriage return (MaxBotix).

    With ``start`` (NMEA's ``$``), bytes before it are garbage and a line cut
    off by the next start is ``bad_tail``. Without it every non-blank line is a
    frame. Lines longer than ``max_line`` are ``bad_length`` and skipped to
    their end. Runs of bare whitespace between lines are not garbage. The
    outcome does not depend on how the stream was torn into reads.
    """

    def __init__(
        self,
        max_line: int,
        start: bytes | None = None,
        check: Callable[[bytes], str | None] | None = None,
        eol: bytes = b"\n",
    ) -> None:
        if len(eol) != 1:
            raise ValueError("the end of line is one byte")
        super().__init__(max_line + 1)  # room for the CR before LF
        self.max_line = max_line
        self.start = start
        self.eol = eol
        self._check = check
        self._discarding = False

    def _counts_as_garbage(self, chunk: bytes) -> bool:
        return bool(chunk.strip())

    def _scan(self) -> None:
        while self._buf:
            if self._discarding and not self._skip_rest():
                return
            if self.start is not None:
                i = self._buf.find(self.start)
                self._drop(len(self._buf) if i < 0 else i)
                if i < 0:
                    return
            j = self._buf.find(self.eol)
            k = self._find_start(1)
            end = min(p for p in (j, k, len(self._buf)) if p >= 0)
            if end > self.max_size:
                # Decided on the first max_size + 1 bytes alone, as a torn stream must be.
                self._reject_line("bad_length", self.max_size + 1)
                self._discarding = True
            elif end == len(self._buf):
                return
            elif end == k:
                self._reject_line("bad_tail", k)
            else:
                self._line(j)

    def _skip_rest(self) -> bool:
        """Drop the rest of an over-long line; False if its end is not here yet."""
        ends = [p for p in (self._buf.find(self.eol), self._find_start(0)) if p >= 0]
        if not ends:
            self._drop(len(self._buf), silent=True)
            return False
        end = min(ends)
        self._drop(end + 1 if self._buf[end : end + 1] == self.eol else end, silent=True)
        self._discarding = False
        return True

    def _find_start(self, at: int) -> int:
        return self._buf.find(self.start, at) if self.start is not None else -1

    def _line(self, j: int) -> None:
        line = bytes(self._buf[:j]).rstrip(b"\r")
        if len(line) > self.max_line:
            self._reject_line("bad_length", j + 1)
            return
        if not line.strip():
            self._drop(j + 1)
            return
        problem = self._check(line) if self._check is not None else None
        if problem is None:
            self._flush_garbage()
            self._emit(Frame(line))
            del self._buf[: j + 1]
        else:
            self._reject_line(problem, j + 1)

    def _reject_line(self, reason: str, size: int) -> None:
        self._flush_garbage()
        self._emit(Rejection(reason, size, bytes(self._buf[: min(size, HEAD_KEPT)])))
        del self._buf[:size]


def _pms_size(header: bytes) -> int | str:
    size = pms5003.frame_size(header)
    return "bad_length" if size is None else size


def _sds_size(header: bytes) -> int | str:
    # A lone AA is common in noise; without C0/C5 after it, it starts nothing.
    return sds011.FRAME_SIZE if header[1] in (sds011.DATA_CMD, sds011.REPLY_CMD) else "garbage"


class Pms5003Framer(BinaryFramer):
    """Plantower PMS5003 data frames (32 bytes) and command acknowledgements (8 bytes)."""

    def __init__(self) -> None:
        super().__init__(pms5003.START, 4, pms5003.FRAME_SIZE, _pms_size, pms5003.frame_problem)


class Sds011Framer(BinaryFramer):
    """Nova SDS011 data (C0) and reply (C5) frames, 10 bytes each."""

    def __init__(self) -> None:
        super().__init__(
            bytes([sds011.HEAD]), 2, sds011.FRAME_SIZE, _sds_size, sds011.frame_problem
        )


class NmeaFramer(LineFramer):
    """NMEA 0183 sentences: ``$`` to LF, checksum verified."""

    def __init__(self) -> None:
        super().__init__(nmea.MAX_SENTENCE, b"$", nmea.line_problem)
