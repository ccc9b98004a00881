"""One log line per rejection reason per interval: a device or forwarder that sends
garbage many times a second must not flood the journal (every rejection is still
counted; the line says how many were not logged since the last one)."""

from __future__ import annotations

import time

LOG_EVERY_S = 1.0  # one log line per rejection reason per second at most


class LogLimiter:
    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """None: do not log now (counted as suppressed); else how many were suppressed."""
        now = time.monotonic()
        last, quiet = self._last.get(key, (-self.every_s, 0))
        if now - last < self.every_s:
            self._last[key] = (last, quiet + 1)
            return None
        self._last[key] = (now, 0)
        return quiet
