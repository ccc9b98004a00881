"""Library log lines (stdlib logging) leave the agent in its own format, minus handled noise."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from pymodbus.logging import Log

from cityedge import logs

LATE_REPLY = "ERROR: received pdu without a corresponding request, IGNORING"


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


OURS = {"the server closed the connection", LATE_REPLY, "shown once", "an info line is not shown"}


def lines(text: str) -> list[dict[str, object]]:
    """Our test lines among stderr's (a library thread of another test may write too)."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") in OURS:
            out.append(doc)
    return out


def test_library_warnings_are_json_lines_with_the_logger_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.route_libraries("info", logs._renderer(json=True))
    # pymodbus's Log.error appends the last frames it saw: the logger, as Log calls it.
    logging.getLogger("pymodbus.logging").error("the server closed the connection")
    logging.getLogger("asyncua.client.ua_client").info("an info line is not shown")
    got = lines(capsys.readouterr().err)
    assert [(g["logger"], g["level"], g["event"]) for g in got] == [
        ("pymodbus.logging", "error", "the server closed the connection")
    ]


def test_lines_cityedge_handles_itself_are_shown_only_at_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.route_libraries("info", logs._renderer(json=True))
    Log.error(LATE_REPLY)  # a late Modbus reply (frames appended): counted as a timeout already
    ua = logging.getLogger("asyncua.client.ua_client")
    ua.warning("close_secure_channel was called but connection is closed")
    assert lines(capsys.readouterr().err) == []
    logs.route_libraries("debug", logs._renderer(json=True))
    logging.getLogger("pymodbus.logging").error(LATE_REPLY)  # Log.error drops a repeat
    assert [g["event"] for g in lines(capsys.readouterr().err)] == [LATE_REPLY]


def test_a_second_call_replaces_the_handler_and_follows_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.route_libraries("info", logs._renderer(json=True))
    logs.route_libraries("warning", logs._renderer(json=True))
    ours = [h for h in logging.getLogger().handlers if getattr(h, "cityedge", False)]
    assert len(ours) == 1
    logging.getLogger("asyncua").warning("shown once")
    assert len(lines(capsys.readouterr().err)) == 1
