"""Downlink commands from the cloud: parse, check, dispatch, answer.

Commands arrive on ``<prefix>/<site>/<gateway>/cmd`` as JSON
``{"id": "...", "cmd": "ack_alert", "args": {...}}``. Every command gets a
result on the events topic (``{"type": "command_result", "id", "cmd", "ok",
"result" | "error"}``), through the outbox like everything else. Anything
malformed is a named, counted, logged rejection, answered when it has an id;
a rejection also carries ``"reason"``, its code (``expired``,
``replayed_nonce``...), so the hub need not parse the text.

A ``verify`` hook sits in front of dispatch: the security layer plugs in
there to accept only commands signed by the city's authority. It returns
(command, None) to go ahead, or (None or the command's id and name, reason):
a signed command refused for its age, target, nonce or policy is still
answered under its own id.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("cityedge.commands")

MAX_COMMAND = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Verify = Callable[[bytes], tuple[dict[str, Any] | None, str | None]]
Answer = Callable[[dict[str, Any]], Awaitable[None]]


class CommandError(Exception):
    """A command that was understood but cannot be carried out; the message says why."""


def parse_plain(payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The unsigned JSON form: (command, None) or (None, reason)."""
    if len(payload) > MAX_COMMAND:
        return None, "too_large"
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "bad_json"
    if not isinstance(doc, dict) or not isinstance(doc.get("cmd"), str):
        return None, "malformed"
    if not isinstance(doc.get("args", {}), dict):
        return None, "malformed"
    return doc, None


class CommandRouter:
    def __init__(self, answer: Answer, verify: Verify = parse_plain) -> None:
        self.handlers: dict[str, Handler] = {}
        self.answer = answer
        self.verify = verify
        self.rejected: Counter[str] = Counter()
        self.done: Counter[str] = Counter()

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def handle(self, payload: bytes) -> None:
        cmd, reason = self.verify(payload)
        if cmd is None or reason is not None:
            reason = reason or "malformed"
            code = reason.split(":", 1)[0]
            self.rejected[code] += 1
            log.warning("command_rejected", reason=reason, size=len(payload))
            cid = cmd.get("id") if cmd else _peek_id(payload)
            name = str(cmd["cmd"]) if cmd and "cmd" in cmd else None
            await self._reply(cid, name, False, f"rejected: {reason}", reason=code)
            return
        name, cid = str(cmd["cmd"]), cmd.get("id")
        handler = self.handlers.get(name)
        if handler is None:
            self.rejected["unknown_command"] += 1
            log.warning("command_rejected", reason="unknown_command", cmd=name)
            allowed = ", ".join(sorted(self.handlers))
            await self._reply(cid, name, False, f"unknown command (allowed: {allowed})")
            return
        try:
            result = await handler(dict(cmd.get("args", {})))
        except (CommandError, ValueError, KeyError) as exc:
            self.rejected["failed"] += 1
            log.warning("command_failed", cmd=name, error=str(exc))
            await self._reply(cid, name, False, str(exc))
            return
        except Exception as exc:  # a bug in a handler: the cloud still gets an answer
            self.rejected["internal_error"] += 1
            log.exception("command_internal_error", cmd=name, id=cid)
            error = f"internal error: {type(exc).__name__}: {exc}"
            await self._reply(cid, name, False, error, reason="internal_error")
            return
        self.done[name] += 1
        log.info("command_done", cmd=name, id=cid)
        await self._reply(cid, name, True, result)

    async def _reply(
        self, cid: Any, name: str | None, ok: bool, body: Any, reason: str | None = None
    ) -> None:
        msg: dict[str, Any] = {"type": "command_result", "id": cid, "cmd": name, "ok": ok}
        msg["result" if ok else "error"] = body
        if reason is not None:
            msg["reason"] = reason
        await self.answer(msg)


def _peek_id(payload: bytes) -> Any:
    try:
        doc = json.loads(payload[:MAX_COMMAND])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return doc.get("id") if isinstance(doc, dict) else None
