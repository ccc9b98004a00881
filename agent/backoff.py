"""Exponential backoff with full jitter, shared by every reconnecting loop.

Full jitter (sleep uniformly in [0, min(cap, base * 2**attempt)]) spreads a
whole city's gateways out when they all lose the broker at once, instead of
having them retry in lock step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 60.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self) -> float:
        """The upper bound of the next delay, without jitter."""
        return float(min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30))))

    def next_delay(self) -> float:
        """The next delay, then count the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
