"""The serial transport: a pyserial port whose bytes the event loop reads. No thread.

Why not a reader thread, and why not ``serial_asyncio``: pyserial opens the
port with ``O_NONBLOCK`` and sets line speed, parity, stop bits and byte
size through termios; after that the port is just a file descriptor, and on
Linux (every gateway we ship) the event loop can watch it with
``loop.add_reader`` like a socket. That is exactly what ``serial_asyncio``
does on POSIX, without its untyped transport/protocol layer or another
runtime dependency; and unlike a blocking reader thread there is nothing to
join on close: removing the reader and closing the port is all, so close can
never leave a thread behind (nor hang on a ``read`` stuck in the kernel).

Reading: the reader callback takes what the port holds (``os.read`` of up to
:data:`READ_SIZE` bytes) and appends it to a bounded deque of chunks that
:meth:`SerialTransport.read` drains. Overflow rule: when :data:`MAX_CHUNKS`
chunks are waiting (the consumer is stalled, e.g. a slow sink) the *oldest*
chunk is dropped and counted (``overflow_chunks``, ``overflow_bytes``); the
framer then sees a torn frame, rejects it and resyncs on the next start.

Loss: a USB adapter unplugged, or the far side of a pty closed, makes the
descriptor readable and the read fail with ``EIO`` (or return end of file);
any write failure counts too. The transport then stops reading, and every
:meth:`read` or :meth:`write` raises :class:`~cityedge.errors.TransientError`
until it is closed and opened again. It does not reopen by itself: the
source does, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass

import serial  # type: ignore[import-untyped]

from cityedge.config.model import BusConfig
from cityedge.errors import TransientError

READ_SIZE = 4096
MAX_CHUNKS = 256
WRITE_RETRY_S = 0.005


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Where the port is and how the line is framed (from the bus config)."""

    device: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    write_timeout_s: float = 1.0

    @classmethod
    def from_bus(cls, bus: BusConfig) -> LineSettings:
        return cls(bus.device, bus.baudrate, bus.parity, bus.stopbits, bus.bytesize, bus.timeout_s)


class SerialTransport:
    """One serial port, read through the event loop. Open, read/write, close; reopenable."""

    def __init__(self, settings: LineSettings, *, max_chunks: int = MAX_CHUNKS) -> None:
        self.settings = settings
        self._port: serial.Serial | None = None
        self._fd = -1
        self._chunks: deque[bytes] = deque()
        self._max_chunks = max_chunks
        self._ready = asyncio.Event()
        self._error: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.overflow_chunks = 0
        self.overflow_bytes = 0

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._error is None

    async def open(self) -> None:
        """Open and configure the port; TransientError if it is not there (yet)."""
        await self.close()
        s = self.settings
        try:
            port = serial.Serial(
                port=s.device,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                timeout=0,
                write_timeout=0,
                exclusive=True,  # a second agent on the same port would steal bytes
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransientError(f"cannot open {s.device}: {exc}") from exc
        self._port, self._fd = port, int(port.fileno())
        self._chunks.clear()
        self._error = None
        self._ready.clear()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    async def close(self) -> None:
        """Stop reading and close the port; idempotent."""
        port, self._port = self._port, None
        if port is None:
            return
        self._stop_reading()
        self._fd = -1
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()  # a device already gone fails here; the descriptor is released anyway
        self._error = self._error or "closed"
        self._ready.set()

    async def read(self) -> bytes:
        """The next chunk of bytes from the port; TransientError once the port is lost."""
        while True:
            if self._chunks:
                return self._chunks.popleft()
            if self._error is not None or self._port is None:
                raise TransientError(self._error or "port not open")
            self._ready.clear()
            await self._ready.wait()

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` (a command of a few bytes); TransientError on failure."""
        deadline = time.monotonic() + self.settings.write_timeout_s
        view = memoryview(data)
        while view:
            if self._error is not None or self._port is None:
                raise TransientError(self._error or "port not open")
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(f"write failed: {exc}")
                raise TransientError(self._error or "write failed") from exc
            self.bytes_out += sent
            view = view[sent:]
            if view:
                if time.monotonic() > deadline:
                    raise TransientError(f"write timed out on {self.settings.device}")
                await asyncio.sleep(WRITE_RETRY_S)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"read failed: {exc}")
            return
        if not data:
            self._lost("end of file (device gone)")
            return
        self.bytes_in += len(data)
        if len(self._chunks) >= self._max_chunks:
            dropped = self._chunks.popleft()
            self.overflow_chunks += 1
            self.overflow_bytes += len(dropped)
        self._chunks.append(data)
        self._ready.set()

    def _lost(self, reason: str) -> None:
        if self._error is None:
            self._error = f"{self.settings.device}: {reason}"
        self._stop_reading()
        self._ready.set()

    def _stop_reading(self) -> None:
        if self._fd >= 0:
            # Without a running loop there is nothing to remove: its readers went with it.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._fd)
