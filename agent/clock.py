"""Time quality: is the wall clock right, and how do we know?

A Raspberry Pi has no real-time clock: it boots with the time it last saved
(or 1970) and steps to the right time once NTP answers, maybe hours later.
Readings taken before that carry ``time_ok=False`` (the drivers ask
:meth:`ClockState.ok`, wired as ``SourceContext.clock_ok``). Scheduling never
looks at the wall clock: drivers poll on ``time.monotonic``, so a step
neither stalls nor floods polling (tests/test_ops_clock.py shows it).

Evidence, any of which makes the clock "synchronised":

* ``kernel``: adjtimex(2) read-only (modes 0): the kernel clears
  ``STA_UNSYNC`` when an NTP daemon (timesyncd, chrony, ntpd) disciplines the
  clock. Under the shipped unit seccomp denies the call (``ProtectClock``);
  it then counts as unknown, not as unsynced.
* ``timesyncd``: ``/run/systemd/timesync/synchronized`` exists (systemd-
  timesyncd creates it at its first sync; /run is empty at boot).
* ``gps``: a time reference from a GPS receiver (the serial driver's NMEA
  RMC sentences) via :meth:`ClockState.reference`, fresh and agreeing with
  the clock within ``gps_tolerance_s``. A fresh GPS reference that
  *disagrees* makes the clock not ok whatever NTP says.

:meth:`ClockState.ok` is called for every batch of readings, so it caches its
verdict for ``recheck_s`` seconds (monotonic). It also notices steps of the
wall clock against the monotonic clock and counts them.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("cityedge.clock")

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
STA_UNSYNC = 0x0040
TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
STEP_THRESHOLD_S = 1.0


class _Timex(ctypes.Structure):
    # The head of struct timex (glibc's legacy layout, as the plain `adjtimex`
    # symbol takes it on 32- and 64-bit); the rest is padding below.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def kernel_synced() -> bool | None:
    """The kernel's view (adjtimex, read-only): True/False, None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()  # modes = 0: read, change nothing
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        return None  # EPERM under seccomp (ProtectClock=yes), ENOSYS elsewhere
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


class ClockState:
    """Whether the wall clock can be trusted, from the kernel, timesyncd and GPS."""

    def __init__(
        self,
        *,
        kernel: Callable[[], bool | None] = kernel_synced,
        timesyncd_flag: Path | None = TIMESYNCD_FLAG,
        gps_tolerance_s: float = 2.0,
        gps_fresh_s: float = 900.0,
        recheck_s: float = 5.0,
        wall: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        """``kernel`` and ``timesyncd_flag`` (None: not used) are the NTP evidence.

        ``wall`` and ``monotonic`` default to ``time.time`` and ``time.monotonic``,
        looked up at each call.
        """
        self._kernel = kernel
        self._flag = timesyncd_flag
        self.gps_tolerance_s = gps_tolerance_s
        self.gps_fresh_s = gps_fresh_s
        self.recheck_s = recheck_s
        self._wall = wall or (lambda: time.time())
        self._mono = monotonic or (lambda: time.monotonic())
        self._gps: tuple[float, float] | None = None  # (offset_s, monotonic of the fix)
        self._checked_at: float | None = None
        self._ok = False
        self._source: str | None = None
        self._evidence: dict[str, Any] = {}
        self._wall_minus_mono: float | None = None
        self.steps = 0
        self.last_step_s: float | None = None

    def reference(self, gps_utc: datetime | float, monotonic: float) -> None:
        """A GPS fix said the UTC time was ``gps_utc`` at ``monotonic`` (time.monotonic())."""
        utc = gps_utc.timestamp() if isinstance(gps_utc, datetime) else float(gps_utc)
        wall_then = self._wall() - (self._mono() - monotonic)
        self._gps = (utc - wall_then, monotonic)
        self._checked_at = None  # re-evaluate on the next ok()

    def ok(self) -> bool:
        """True while the wall clock is known to be right (cached for ``recheck_s``)."""
        now = self._mono()
        if self._checked_at is None or now - self._checked_at >= self.recheck_s:
            self._evaluate(now)
        return self._ok

    def state(self) -> dict[str, Any]:
        """For ``cityedge status`` and the health message (schema: docs/operations.md)."""
        ok = self.ok()
        return {
            "ok": ok,
            "source": self._source,
            **self._evidence,
            "steps": self.steps,
            "last_step_s": self.last_step_s,
        }

    def _evaluate(self, now: float) -> None:
        self._checked_at = now
        self._notice_step(now)
        kernel = self._kernel()
        timesyncd = self._flag is not None and self._flag.exists()
        gps = self._gps_evidence(now)
        self._evidence = {"kernel": kernel, "timesyncd": timesyncd, "gps": gps}
        if gps is not None and not gps["agrees"]:
            ok, source = False, None  # a fresh fix says the clock is wrong
        elif gps is not None:
            ok, source = True, "gps"
        elif kernel:
            ok, source = True, "kernel"
        elif timesyncd:
            ok, source = True, "timesyncd"
        else:
            ok, source = False, None
        if ok != self._ok:
            if ok:
                log.info("clock_synchronized", **self._evidence)
            else:  # readings now carry time_ok: false
                log.warning("clock_unsynchronized", **self._evidence)
        self._ok, self._source = ok, source

    def _gps_evidence(self, now: float) -> dict[str, Any] | None:
        if self._gps is None:
            return None
        offset, at = self._gps
        if now - at > self.gps_fresh_s:
            return None
        agrees = abs(offset) <= self.gps_tolerance_s
        return {"offset_s": round(offset, 3), "age_s": round(now - at, 1), "agrees": agrees}

    def _notice_step(self, now: float) -> None:
        diff = self._wall() - now
        if self._wall_minus_mono is not None:
            step = diff - self._wall_minus_mono
            if abs(step) >= STEP_THRESHOLD_S:
                self.steps += 1
                self.last_step_s = round(step, 3)
                log.warning("clock_stepped", step_s=self.last_step_s)
                if self._gps is not None:  # the fix was against the old wall clock
                    self._gps = (self._gps[0] - step, self._gps[1])
        self._wall_minus_mono = diff
