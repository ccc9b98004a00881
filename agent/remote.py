"""Commands from the cloud: verified, checked against policy, carried out, answered.

Split from :mod:`cityedge.agent` so the agent stays the data path. Every
command reaches :class:`RemoteCommands` only through the signed downlink
(``cityedge.signing.downlink``): signed by a configured authority key, fresh,
not replayed, and within policy (a write only to a point its profile marks
writable, within range).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from cityedge.commands import CommandError, CommandRouter
from cityedge.errors import TransientError
from cityedge.readings import Priority
from cityedge.signing.downlink import Command, CommandVerifier, NonceCache
from cityedge.uplink.link import state_payload

if TYPE_CHECKING:
    from cityedge.agent import Agent

log = structlog.get_logger("cityedge.commands")


class RemoteCommands:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        config = agent.config
        self.verifier = CommandVerifier(
            list(config.downlink.authority_keys),
            config.site.gateway_id,
            window_s=config.downlink.window_s,
            nonces=NonceCache(config.downlink.window_s, path=agent.state_dir / "nonces.json"),
            policy=self._command_policy,
        )
        self.router = CommandRouter(self._answer, self._verify_command)
        for name, handler in {
            "ack_alert": self._cmd_ack_alert,
            "status": self._cmd_status,
            "install_model": self._cmd_install_model,
            "write_point": self._cmd_write_point,
            "reload_config": self._cmd_reload_config,
            "republish": self._cmd_republish,
            "install_profile": self._cmd_install_profile,
        }.items():
            self.router.register(name, handler)
        self.tasks: set[asyncio.Task[None]] = set()

    def _verify_command(self, payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
        """Only commands signed by the city's authority, fresh, not replayed, within policy."""
        if not self.agent.config.downlink.authority_keys:
            return None, "no_authority_configured"
        verdict = self.verifier.check(payload)
        if not verdict.ok or verdict.command is None:
            detail = f"{verdict.reason}: {verdict.detail}" if verdict.detail else verdict.reason
            known = verdict.command  # signed and parsed: answer under its own id
            named = None if known is None else {"cmd": known.command, "id": known.nonce}
            return named, detail or "malformed"
        cmd = verdict.command
        return {"cmd": cmd.command, "args": cmd.args, "id": cmd.nonce}, None

    def _command_policy(self, cmd: Command) -> str | None:
        """A write only to a point its profile marks writable, within its range."""
        if cmd.command != "write_point":
            return None
        dev = next((d for d in self.agent.config.devices if d.id == cmd.args.get("device")), None)
        if dev is None:
            return f"unknown device {cmd.args.get('device')!r}"
        name = cmd.args.get("point")
        item = next((i for i in dev.profile.all_points() if i.name == name), None)
        if item is None:
            return f"device {dev.id} has no point {name!r}"
        if item.write is None:
            return f"{dev.id}.{name} is read-only in profile {dev.profile.name}"
        value = cmd.args.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "value must be a number"
        if not item.write.min <= value <= item.write.max:
            return f"{value} is outside {item.write.min}..{item.write.max}"
        return None

    def on_downlink(self, topic: str, payload: bytes) -> None:
        if len(self.tasks) >= 64:
            self.router.rejected["busy"] += 1
            log.warning("command_rejected", reason="busy")
            return
        task = asyncio.get_running_loop().create_task(self.router.handle(payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        await self.agent.writer.submit([message], Priority.EVENT)

    async def _cmd_ack_alert(self, args: dict[str, Any]) -> dict[str, Any]:
        alert_id = args.get("alert_id")
        if not isinstance(alert_id, str):
            raise CommandError("args.alert_id must be a string")
        known = await asyncio.to_thread(self.agent.alert_store.ack, alert_id)
        if not known:
            raise CommandError(f"no unacknowledged alert {alert_id}")
        return {"alert_id": alert_id, "acked": True}

    async def _cmd_install_model(self, args: dict[str, Any]) -> dict[str, Any]:
        """A new anomaly model version, installed without a restart (signed command)."""
        for name in ("name", "onnx_b64", "sha256"):
            if not isinstance(args.get(name), str):
                raise CommandError(f"args.{name} must be a string")
        result = await self.agent.anomaly.install_async(
            args["name"], args["onnx_b64"], args["sha256"]
        )
        link = self.agent.sender.link
        if link is not None:
            await self.agent._birth(link)  # the measurement changed: attest again
        return result

    async def _cmd_write_point(self, args: dict[str, Any]) -> dict[str, Any]:
        """Write a point (the policy already checked: writable, within range)."""
        device, point, value = args.get("device"), args.get("point"), args.get("value")
        dev = next((d for d in self.agent.config.devices if d.id == device), None)
        if dev is None or not isinstance(point, str) or not isinstance(value, int | float):
            raise CommandError("args: device (a configured id), point, value (a number)")
        src = self.agent._running.get(dev.bus, (None, None))[0]
        writer = getattr(src, "write_now", None) or getattr(src, "write", None)
        if writer is None:
            raise CommandError(
                f"bus {dev.bus} ({self.agent.config.buses[dev.bus].type}) cannot write"
            )
        try:
            await writer(dev.id, point, value)
        except (TransientError, TimeoutError) as exc:
            raise CommandError(f"not written: {exc or 'the device did not answer'}") from exc
        except Exception as exc:  # the device or the codec said no: the cloud hears why
            raise CommandError(f"not written: {type(exc).__name__}: {exc}") from exc
        log.info("point_written_by_command", device=dev.id, point=point, value=value)
        return {"device": dev.id, "point": point, "value": value, "written": True}

    async def _cmd_reload_config(self, args: dict[str, Any]) -> dict[str, Any]:
        """Reload the config file; with ``toml``, validate that text first, then install it.

        A config that does not validate changes nothing: the old one keeps
        running and the answer lists every problem.
        """
        text = args.get("toml")
        if text is not None:
            if not isinstance(text, str):
                raise CommandError("args.toml must be the config file's text")
            problems = await asyncio.to_thread(self._validate_text, text)
            if problems:
                raise CommandError("config refused: " + "; ".join(problems[:20]))
            await asyncio.to_thread(_replace_file, self.agent.config.source, text.encode())
        result = await self.agent.reload("command")
        if not result.get("ok"):
            raise CommandError("config refused: " + "; ".join(result.get("problems", [])[:20]))
        return result

    def _validate_text(self, text: str) -> list[str]:
        from cityedge.config.loader import check_config

        candidate = self.agent.config.source.with_name(
            f".{self.agent.config.source.name}.candidate"
        )
        candidate.write_text(text)
        try:
            _cfg, problems = check_config(candidate, self.agent.config.profiles_dir)
        finally:
            candidate.unlink(missing_ok=True)
        return [str(p) for p in problems]

    async def _cmd_install_profile(self, args: dict[str, Any]) -> dict[str, Any]:
        """A device profile update: validated, installed beside the shipped ones, applied.

        The new profile must load with every rule of docs/profiles.md; the
        config is then reloaded, so only the buses with devices on that
        profile restart. A profile that does not validate changes nothing.
        """
        from cityedge.config.profile_loader import PROFILE_NAME, check_profile, profile_path

        name, text = args.get("name"), args.get("toml")
        if not isinstance(name, str) or not re.fullmatch(PROFILE_NAME, name):
            raise CommandError('args.name must be "<vendor>/<model>"')
        if not isinstance(text, str):
            raise CommandError("args.toml must be the profile file's text")
        staging = self.agent.state_dir / ".profile-staging"
        candidate = profile_path(staging, name)

        def stage() -> list[str]:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.write_text(text)
            _p, problems = check_profile(staging, name)
            return [str(p) for p in problems]

        problems = await asyncio.to_thread(stage)
        if problems:
            candidate.unlink(missing_ok=True)
            raise CommandError("profile refused: " + "; ".join(problems[:20]))
        target = profile_path(self.agent.profile_updates, name)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, candidate, target)
        result = await self.agent.reload("profile_update")
        return {"profile": name, "installed": str(target), "reload": result}

    async def _cmd_republish(self, args: dict[str, Any]) -> dict[str, Any]:
        """Birth (online state), keys and attestation again, e.g. after a hub restart."""
        link = self.agent.sender.link
        if link is None:
            raise CommandError("the uplink is not connected")
        link.publish(self.agent.sender.topic("state"), state_payload("online"), retain=True)
        await self.agent._birth(link)
        return {"republished": ["state", "keys", "attestation"]}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.agent._status(args)


def _replace_file(path: Path, data: bytes) -> None:
    """Atomic: write beside, fsync, rename over (a power cut leaves old or new)."""
    tmp = path.with_name(f".{path.name}.new")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
