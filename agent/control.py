"""The local control socket: one JSON request per line, one JSON answer per line.

Only the technician CLI talks to it (``cityedge status`` ...). It is a Unix
socket in the state directory, mode 0660, so only the agent's user and group
can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("cityedge.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024
MAX_ANSWER = 16 * 1024 * 1024  # a status of a big gateway is large


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST
        )
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            answer = await self._answer(line)
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:
            log.info("control_request_failed", error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict) or req.get("cmd") not in self.handlers:
            return {"ok": False, "error": f"unknown command; allowed: {sorted(self.handlers)}"}
        try:
            return {"ok": True, **await self.handlers[req["cmd"]](req)}
        except Exception as exc:  # a handler's failure is the caller's answer
            log.warning("control_command_failed", cmd=req["cmd"], error=str(exc))
            return {"ok": False, "error": str(exc)}


async def request(path: Path, cmd: str, timeout_s: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one command to a running agent and return its answer."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(str(path), limit=MAX_ANSWER), timeout_s
    )
    try:
        writer.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
    answer: dict[str, Any] = json.loads(line)
    return answer
