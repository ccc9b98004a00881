"""systemd's notify protocol (sd_notify), without python-systemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a Unix datagram
socket (a path, or ``@name`` in the abstract namespace), and with
``WatchdogSec=`` also ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). Each
message is newline-separated ``KEY=value`` fields in one datagram.

The agent says ``READY=1`` once its outbox is open and its sources run,
``STATUS=...`` now and then, ``RELOADING=1`` on SIGHUP and ``STOPPING=1`` on
the way out. :meth:`Notifier.watchdog_loop` sends ``WATCHDOG=1`` every
``WATCHDOG_USEC / 2`` *from the event loop*: when the loop is stuck (a
blocking call, a busy coroutine) the pings stop, and systemd kills and
restarts the agent after ``WatchdogSec``.

Outside systemd (no ``$NOTIFY_SOCKET``) every method is a cheap no-op that
returns False, so the agent calls them unconditionally::

    notifier = Notifier.from_env()
    task = asyncio.create_task(notifier.watchdog_loop())
    notifier.ready("polling 12 devices")
    ...
    notifier.stopping()
    task.cancel()
    notifier.close()
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("cityedge.notify")


def socket_address(value: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value ('@' is the abstract namespace)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when no watchdog is meant for ``pid``."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None  # the watchdog is meant for another process (a parent, a wrapper)
    return int(usec) / 2 / 1e6


class Notifier:
    """Sends sd_notify messages to systemd, or nothing when not under systemd."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        """``address``: a ``$NOTIFY_SOCKET`` value; ``watchdog_s``: the ping interval."""
        self.address = socket_address(address) if address else None
        self.watchdog_s = watchdog_s
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the socket and watchdog systemd passed in the environment."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_interval_s(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; False when not sent (never raises)."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: a full receive queue must not block the event loop.
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("notify_failed", error=str(exc), failed=self.failed)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup is done: systemd considers the unit started."""
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """A reload began; call :meth:`ready` when it is done."""
        # MONOTONIC_USEC is required by Type=notify-reload (systemd 253+), ignored before.
        usec = time.monotonic_ns() // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown began."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.send("WATCHDOG=1")

    async def watchdog_loop(self, interval_s: float | None = None) -> None:
        """Ping every ``interval_s`` (default: ``$WATCHDOG_USEC / 2``) until cancelled.

        Returns at once when there is no socket or no watchdog. Runs on the
        event loop on purpose: a blocked loop must stop the pings.
        """
        interval = self.watchdog_s if interval_s is None else interval_s
        if self.address is None or not interval or interval <= 0:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
