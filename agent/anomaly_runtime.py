"""The anomaly models on the agent's data path: streams, ticks, alerts, updates.

Which point a model watches is set by the profile (a point's or field's
``model``) or by the config (``[[anomaly.watch]]``). Readings are buffered
and scored once per tick, all streams of a model in one onnxruntime call, on
the agent's own inference thread. Scores become blue / yellow / red alerts
through the same tracker as threshold rules; levels are derived from the
model's shipped threshold T (blue at T, yellow at T + (1-T)/3, red at
T + 2(1-T)/3), and the alert's evidence names the model and its version.

A new model version is installed at run time (``install_model``, a signed
downlink command): written next to the shipped models, then loaded in place;
the streams of other models keep their state, and the streams of the
updated model keep theirs when its state layout did not change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from cityedge.alerting import AlertEngine
from cityedge.alerts import AlertRule
from cityedge.anomaly import AnomalyEngine
from cityedge.anomaly.model import load_model
from cityedge.anomaly.nab import default_model_dir
from cityedge.config.model import Config
from cityedge.readings import Quality, Reading

log = structlog.get_logger("cityedge.anomaly")

StreamKey = tuple[str, str]  # (device, point)
MODEL_NAME = re.compile(r"[a-z0-9_]{1,64}")
MAX_MODEL_BYTES = 48 * 1024


def watched(config: Config) -> dict[StreamKey, str]:
    """(device, point) -> model name, from profiles and the config's anomaly section."""
    out: dict[StreamKey, str] = {}
    for dev in config.devices:
        for item in dev.profile.all_points():
            if item.model:
                out[(dev.id, item.name)] = item.model
    for w in config.anomaly.watch:
        out[(w.device, w.point)] = w.model
    return out


# An anomaly alert stays raised for at least this many readings of calm (scores
# below half the threshold), or the model's own event length if longer: the
# models report an event once and then score 0 while it lasts (one alarm per
# event, suppression), so "three calm samples" cleared an alert in the middle
# of its event. The cool-down after a clear is short: the models' suppression
# already keeps a stream from alarming again on more of the same.
ANOMALY_CLEAR_AFTER = 12
ANOMALY_COOLDOWN_S = 60.0


def rule_for(threshold: float, model: str, event_readings: int = 0) -> AlertRule:
    """Blue at the model's standard threshold, yellow and red evenly above it."""
    t = min(max(threshold, 0.0), 0.99)
    step = (1.0 - t) / 3
    clear_after = max(ANOMALY_CLEAR_AFTER, event_readings)
    return AlertRule(levels=(t, t + step, t + 2 * step), hysteresis=t / 2,
                     clear_after=clear_after, cooldown_s=ANOMALY_COOLDOWN_S,
                     kind="anomaly", model=model)  # fmt: skip


class AnomalyRuntime:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        alerts: AlertEngine,
        raise_alerts: Callable[[list[dict[str, Any]]], Any],
    ) -> None:
        self.updates_dir = state_dir / "models"
        shipped = config.anomaly.model_dir or default_model_dir()
        self.engine = AnomalyEngine([self.updates_dir, shipped])
        self.alerts = alerts
        self.raise_alerts = raise_alerts
        self.tick_s = config.anomaly.tick_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="anomaly")
        self._pending: dict[StreamKey, list[tuple[datetime, float]]] = defaultdict(list)
        self._rules: dict[str, AlertRule] = {}
        self.streams: dict[StreamKey, str] = {}
        self.scored = 0
        self.anomalies = 0
        self.failed: dict[str, str] = {}
        self._passed_over_logged: set[str] = set()
        self._labels: dict[StreamKey, tuple[str, str]] = {}  # unit and cell per stream
        self._install_lock = threading.Lock()
        for leftover in self.updates_dir.glob(".staging*"):  # an install cut short by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Add and remove streams for a (re)loaded config; unchanged streams keep state."""
        wanted = watched(config)
        for key in [k for k, m in self.streams.items() if wanted.get(k) != m]:
            self.engine.remove_stream(key)
            del self.streams[key]
            self._labels.pop(key, None)
        for key, model in wanted.items():
            if key in self.streams:
                continue
            try:
                self.engine.add_stream(key, model)
            except (FileNotFoundError, ValueError) as exc:
                self.failed[model] = str(exc)
                log.error("anomaly_model_unavailable", model=model, error=str(exc))
                continue
            self.streams[key] = model
        for model, error in self.engine.passed_over.items():
            if model not in self._passed_over_logged:
                self._passed_over_logged.add(model)
                log.error(
                    "anomaly_model_update_unloadable",
                    model=model,
                    error=error,
                    using=str(self.engine.model_of_name(model).path),
                    hint="install the update again, or delete the damaged file",
                )

    def observe(self, readings: Sequence[Reading]) -> None:
        """Called from the sink: keep watched good numeric readings for the next tick."""
        if not self.streams:
            return
        for r in readings:
            key = (r.device, r.point)
            if key not in self.streams or r.quality != Quality.GOOD:
                continue
            if isinstance(r.value, bool) or not isinstance(r.value, int | float):
                continue
            pending = self._pending[key]
            if len(pending) < 1000:  # a stalled tick must not grow without bound
                pending.append((r.ts, float(r.value)))
            self._labels[key] = (r.unit, r.cell)  # for the alert record, as threshold alerts

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                if not self._pending:
                    continue
                pending, self._pending = self._pending, defaultdict(list)
                scored = await loop.run_in_executor(self._executor, self._score, pending)
                records = []
                for (device, point), ts, value, score in scored:
                    rule = self._rule(self.streams.get((device, point), ""))
                    if rule is None:
                        continue
                    unit, cell = self._labels.get((device, point), ("", ""))
                    rec = self.alerts.on_score(
                        rule, device, point, ts, value, score, unit=unit, cell=cell
                    )
                    if rec is not None:
                        records.append(rec)
                if records:
                    self.anomalies += sum(1 for r in records if r["transition"] != "cleared")
                    await self.raise_alerts(records)
        finally:
            self._executor.shutdown(wait=True)

    def _score(
        self, pending: dict[StreamKey, list[tuple[datetime, float]]]
    ) -> list[tuple[StreamKey, datetime, float, float]]:
        """Rounds of one reading per stream, each round one engine step (the thread)."""
        out = []
        depth = max(len(v) for v in pending.values())
        for i in range(depth):
            batch = [(k, v[i][0], v[i][1]) for k, v in pending.items() if i < len(v)]
            for (key, score), (_k, ts, value) in zip(self.engine.step(batch), batch, strict=True):
                out.append((key, ts, value, score))
        self.scored += len(out)
        return out  # type: ignore[return-value]

    def _rule(self, model_name: str) -> AlertRule | None:
        rule = self._rules.get(model_name)
        if rule is None:
            try:
                model = self.engine.model_of_name(model_name)
            except (FileNotFoundError, ValueError):
                return None
            threshold = model.thresholds.get("standard", 0.5)
            label = f"{model.name}@{model.version}"
            rule = self._rules[model_name] = rule_for(threshold, label, model.post.event_readings)
        return rule

    def install(self, name: str, onnx_b64: str, sha256: str) -> dict[str, Any]:
        """Write a new model version and load it in place (the command's work)."""
        if not MODEL_NAME.fullmatch(name):
            raise ValueError("model name must be lowercase letters, digits, _ (at most 64)")
        try:
            data = base64.b64decode(onnx_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("onnx_b64 is not base64") from None
        if len(data) > MAX_MODEL_BYTES:
            raise ValueError(f"model is {len(data)} bytes; at most {MAX_MODEL_BYTES}")
        if hashlib.sha256(data).hexdigest() != sha256.lower():
            raise ValueError("sha256 does not match the model bytes")
        # One install at a time (two commands may run at once), each with its own staging folder.
        with self._install_lock:
            self.updates_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.updates_dir))
            try:
                old, new, kept = self._install_staged(name, data, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self._rules.pop(name, None)
        self.failed.pop(name, None)
        streams = sum(1 for m in self.streams.values() if m == name)
        log.info("anomaly_model_installed", model=name, old=old, new=new, state_kept=kept)
        return {
            "model": name,
            "old_version": old,
            "version": new,
            "state_kept": kept,
            "streams": streams,
        }

    async def install_async(self, name: str, onnx_b64: str, sha256: str) -> dict[str, Any]:
        """:meth:`install` on the scoring thread: a model is never swapped mid-tick."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.install, name, onnx_b64, sha256)

    def _install_staged(
        self, name: str, data: bytes, staging: Path
    ) -> tuple[str | None, str, bool]:
        """Load the bytes from ``staging`` first, then make them the installed version.

        Nothing in use is touched until the candidate has loaded: a file that
        is not a model, or a model of another name, is refused and the
        running version (and the file it came from) stays.
        """
        (staging / name).mkdir()
        path = staging / name / f"{name}.onnx"
        path.write_bytes(data)
        try:
            candidate = load_model(staging, name)
        except (ValueError, OSError) as exc:
            raise ValueError(f"the model does not load: {exc}") from exc
        if candidate.name != name:
            raise ValueError(
                f"the model calls itself {candidate.name!r} in its metadata; it can be "
                f"installed only as {candidate.name!r}, not as {name!r}"
            )
        folder = self.updates_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        live = folder / f"{name}.onnx"
        previous = live.read_bytes() if live.is_file() else None
        os.replace(path, live)
        try:
            return self.engine.reload_model(name)
        except (ValueError, OSError) as exc:  # loaded above; a disk fault, say
            if previous is None:
                live.unlink(missing_ok=True)
            else:
                _write_atomically(live, previous)
            raise ValueError(f"the model does not load: {exc}") from exc

    def hashes(self) -> dict[str, str]:
        """sha256 of every model file in use, for the attestation record."""
        out = {}
        for name in set(self.streams.values()):
            try:
                path = self.engine.model_of_name(name).path  # the file it was loaded from
            except (FileNotFoundError, ValueError):
                continue
            if path.is_file():
                out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def status(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "scored": self.scored,
            "anomalies": self.anomalies,
            "models": self.engine.models(),
            "unavailable": dict(self.failed),
            "updates_passed_over": dict(self.engine.passed_over),
        }


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
