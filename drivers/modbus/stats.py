"""Per-device counters behind ``cityedge status``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from cityedge.readings import format_ts, utc_now


@dataclass(slots=True)
class DeviceStats:
    """What happened to one device since the agent started."""

    polls: int = 0
    requests: int = 0
    skipped_slots: int = 0
    decode_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_poll: datetime | None = None
    last_poll_mono: float | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    latency_s: float = 0.0
    latency_sum_s: float = 0.0
    interval_ewma_s: float | None = None

    def polled(self, latency_s: float) -> None:
        """Count a successful poll that took ``latency_s``."""
        now = time.monotonic()
        if self.last_poll_mono is not None:
            interval = now - self.last_poll_mono
            prev = self.interval_ewma_s
            self.interval_ewma_s = interval if prev is None else 0.8 * prev + 0.2 * interval
        self.polls += 1
        self.last_poll, self.last_poll_mono = utc_now(), now
        self.latency_s = latency_s
        self.latency_sum_s += latency_s

    def stalled(self) -> None:
        """No data is coming (down, unreachable, only exception replies): forget the rate."""
        self.interval_ewma_s = None
        self.last_poll_mono = None

    def failed(self, reason: str, detail: str) -> None:
        """Count an error by reason; ``last_error`` is ``reason: detail``."""
        self.errors[reason] += 1
        self.last_error = f"{reason}: {detail}" if detail else reason
        self.last_error_at = utc_now()

    def as_dict(self) -> dict[str, object]:
        rate = 1.0 / self.interval_ewma_s if self.interval_ewma_s else 0.0
        return {
            "last_poll": format_ts(self.last_poll) if self.last_poll else None,
            "last_error": self.last_error,
            "last_error_at": format_ts(self.last_error_at) if self.last_error_at else None,
            "polls": self.polls,
            "requests": self.requests,
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "decode_errors": self.decode_errors,
            "skipped_slots": self.skipped_slots,
            "poll_rate_hz": round(rate, 4),
            "latency_ms": round(self.latency_s * 1000, 2),
            "latency_mean_ms": round(self.latency_sum_s / self.polls * 1000, 2)
            if self.polls
            else None,
        }
