"""A serial line on loopback: two pseudo-terminals joined by a bridge.

pymodbus (through pyserial) opens serial ports by path, and a pty has a
path only on its slave side, so a "null-modem cable" is two pty pairs
whose master sides an asyncio bridge copies between. The bridge can also
play the wire: with ``baudrate`` set it delivers bytes no faster than the
line would (10 bits per byte), which is what RTU timing tests and the
benchmark need, and ``cut()`` / ``mend()`` unplug it.
"""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Direction:
    """Copies one master fd to another, optionally at line speed."""

    def __init__(self, src: int, dst: int, link: PtyLink) -> None:
        self.src, self.dst, self.link = src, dst, link
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.line_free = 0.0
        self.task: asyncio.Task[None] | None = None

    def readable(self) -> None:
        try:
            data = os.read(self.src, 4096)
        except OSError:
            return
        if data and not self.link.is_cut:
            self.link.bytes_carried += len(data)
            self.queue.put_nowait(data)

    async def pump(self) -> None:
        while True:
            data = await self.queue.get()
            if self.link.baudrate:
                start = max(time.monotonic(), self.line_free)
                self.line_free = start + len(data) * 10 / self.link.baudrate
                await asyncio.sleep(self.line_free - time.monotonic())
            if not self.link.is_cut:
                os.write(self.dst, data)


class PtyLink:
    """Two serial port paths, ``a`` and ``b``, wired to each other."""

    def __init__(self, baudrate: int | None = None) -> None:
        self.baudrate = baudrate
        self.is_cut = False
        self.bytes_carried = 0
        self._fds: list[int] = []
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (m1, s1, m2, s2):
            tty.setraw(fd)
            os.set_blocking(fd, False)
        self._fds = [m1, s1, m2, s2]
        # The slave fds stay open here so the masters never see a hangup
        # when a client closes and reopens its end.
        self.a, self.b = os.ttyname(s1), os.ttyname(s2)
        self._dirs = [_Direction(m1, m2, self), _Direction(m2, m1, self)]

    def cut(self) -> None:
        """Unplug the cable: bytes in either direction are lost."""
        self.is_cut = True

    def mend(self) -> None:
        self.is_cut = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for d in self._dirs:
            loop.add_reader(d.src, d.readable)
            d.task = asyncio.create_task(d.pump(), name="pty-bridge")

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for d in self._dirs:
            loop.remove_reader(d.src)
            if d.task is not None:
                d.task.cancel()
                await asyncio.gather(d.task, return_exceptions=True)
        for fd in self._fds:
            os.close(fd)
        self._fds = []


@asynccontextmanager
async def pty_link(baudrate: int | None = None) -> AsyncIterator[PtyLink]:
    """A running :class:`PtyLink`, closed on exit."""
    link = PtyLink(baudrate)
    await link.start()
    try:
        yield link
    finally:
        await link.stop()
