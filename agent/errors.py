"""Error types shared across the agent.

The split follows what the caller should do about it:

* :class:`ConfigError` is fatal at start: it carries every problem found, each
  naming file, line and field, so a technician fixes them all in one go.
* :class:`TransientError` is for I/O that may work again later: the supervisor
  backs off and retries.
* A device fault (a Modbus exception reply, a bad status code) is not an
  exception at all: it becomes a reading with bad quality.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a config or profile file."""

    file: str
    line: int
    path: str
    message: str
    allowed: str | None = None
    got: object = None
    has_got: bool = False

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.path}: {self.message}"
        extras = []
        if self.allowed is not None:
            extras.append(f"allowed: {self.allowed}")
        if self.has_got:
            extras.append(f"got: {self.got!r}")
        if extras:
            text += " (" + "; ".join(extras) + ")"
        return text


class ConfigError(Exception):
    """The configuration (or a profile it names) is invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TransientError(Exception):
    """An I/O failure that may go away: retry with backoff."""


class DeviceTimeout(TransientError):
    """A device did not answer within its timeout."""


# Exit codes of `cityedge run`. systemd's RestartPreventExitStatus names
# EXIT_CONFIG so a bad config does not restart-loop.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h
