"""structlog, configured once: JSON lines under systemd, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

# Library lines that report a situation cityedge already handles and logs in
# its own words; they are shown only at debug. (logger name prefix, message start)
HANDLED = (
    # A Modbus reply that arrives after its request timed out: the poll was
    # already counted as a timeout and retried (cityedge.drivers.modbus).
    ("pymodbus", "ERROR: received pdu without a corresponding request"),
    # Closing an OPC UA session whose connection is already gone.
    ("asyncua", "close_secure_channel was called but connection is closed"),
    ("asyncua", "close_secure_channel raised during disconnect"),
)


class HandledByCityedge(logging.Filter):
    """Passes records at ``level`` and above; the ``HANDLED`` lines only at debug."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        if self.level <= logging.DEBUG:
            return True
        message = str(record.msg)
        return not any(
            record.name.startswith(prefix) and message.startswith(start)
            for prefix, start in HANDLED
        )


def route_libraries(level: str = "info", renderer: structlog.types.Processor | None = None) -> None:
    """Library log records (stdlib ``logging``) go out as cityedge's own lines.

    Without this, Python prints a library's warnings bare on stderr: not
    JSON in the journal, and noise in a CLI command's output. Library lines
    at warning and above are shown (all of them at ``debug``), the
    ``HANDLED`` ones only at ``debug``. Replaces any handler an earlier call installed.
    """
    threshold = LEVELS.get(level, logging.INFO)
    shown = logging.DEBUG if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    handler = _StderrHandler()
    handler.addFilter(HandledByCityedge(shown))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer or _renderer(_wants_json()),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "cityedge", False)]:
        root.removeHandler(old)
    handler.cityedge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(shown)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _wants_json() -> bool:
    """JSON lines when stderr is not a terminal or journald is listening."""
    return not sys.stderr.isatty() or "JOURNAL_STREAM" in os.environ


def _renderer(json: bool) -> structlog.types.Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """JSON when stdout is not a terminal or journald is listening."""
    if json is None:
        json = _wants_json()
    renderer = _renderer(json)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    route_libraries(level, renderer)
