"""What every ``cityedge`` subcommand shares: the control socket, JSON out, error lines.

Errors go to standard error as one line, ``cityedge CMD: what is wrong; what
is allowed or what to do``, because the person reading them is a technician
with a laptop, not a Python developer. Exit codes are those of
:mod:`cityedge.errors`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = Path("/var/lib/cityedge/control.sock")
DEFAULT_CONFIG = Path("/etc/cityedge/cityedge.toml")


class UsageError(ValueError):
    """The command line is wrong; the message says what is allowed (exit 2)."""


class AgentUnreachable(Exception):
    """No agent answered on the control socket; the message says what to check."""


class AgentRefused(Exception):
    """The agent answered ``ok: false``; the message is the agent's reason."""


def add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        help=f"the running agent's control socket (default {DEFAULT_SOCKET})",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def say(cmd: str, message: str) -> None:
    """One error or notice line on standard error."""
    print(f"cityedge {cmd}: {message}", file=sys.stderr)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def unreachable_hint(socket: Path, exc: BaseException) -> str:
    """Why the socket did not answer, and what to try."""
    if isinstance(exc, PermissionError):
        return (
            f"not allowed to use {socket}: run as root or as a member of the agent's group "
            "(sudo cityedge ...)"
        )
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return (
            f"no agent answers on {socket}: is it running? (systemctl status cityedge); "
            "give --socket PATH if its state directory is elsewhere"
        )
    if isinstance(exc, TimeoutError):
        return f"the agent on {socket} did not answer in time (busy or stuck?)"
    return f"no usable answer from {socket}: {exc}"


async def ask(socket: Path, cmd: str, timeout_s: float = 10.0, **args: Any) -> dict[str, Any]:
    """One control command; AgentUnreachable or AgentRefused unless it answers ok."""
    from cityedge.control import request

    try:
        answer = await request(socket, cmd, timeout_s=timeout_s, **args)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AgentUnreachable(unreachable_hint(socket, exc)) from exc
    if not answer.get("ok"):
        error = str(answer.get("error", "refused without a reason"))
        if error.startswith("unknown command"):
            error = f"this agent does not know the command {cmd!r} (older version?): {error}"
        raise AgentRefused(error)
    return answer


def read_secret(path: Path, what: str) -> str:
    """The first line of a secret file (PIN, password); UsageError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UsageError(f"{what} {path} is empty; it must hold the secret on its first line")
    return lines[0].strip()


def csv_choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"], each one of ``allowed``; UsageError otherwise."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        got = ", ".join(bad) if bad else "nothing"
        raise UsageError(f"{what} must be among {', '.join(allowed)} (got {got})")
    return items
