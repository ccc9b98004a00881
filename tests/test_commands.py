"""CommandRouter: every command gets an answer, even when its handler has a bug."""

from __future__ import annotations

import json
from typing import Any

from cityedge.commands import CommandRouter


async def test_a_handler_that_raises_an_unexpected_error_is_still_answered() -> None:
    answers: list[dict[str, Any]] = []

    async def answer(msg: dict[str, Any]) -> None:
        answers.append(msg)

    async def broken(args: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the disk went away")

    router = CommandRouter(answer)
    router.register("install_model", broken)
    await router.handle(json.dumps({"id": "c-1", "cmd": "install_model", "args": {}}).encode())
    assert answers == [
        {
            "type": "command_result",
            "id": "c-1",
            "cmd": "install_model",
            "ok": False,
            "error": "internal error: RuntimeError: the disk went away",
            "reason": "internal_error",
        }
    ]
    assert router.rejected["internal_error"] == 1
