"""Anomaly models on the agent's path: scores to alerts, and model updates at run time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cityedge.alerting import AlertEngine
from cityedge.anomaly.nab import default_model_dir
from cityedge.anomaly_runtime import AnomalyRuntime
from cityedge.config.loader import load_config
from cityedge.readings import Reading
from tests.peers.agent import PROFILES

CONFIG = f"""
profiles_dir = "{PROFILES}"
[site]
id = "s"
gateway_id = "gw"
latitude = 52.5
longitude = 13.4
[buses.tcp]
type = "modbus-tcp"
[[devices]]
id = "pump-1"
bus = "tcp"
unit_id = 1
profile = "eastron/sdm630"
[[devices]]
id = "pump-2"
bus = "tcp"
unit_id = 2
profile = "eastron/sdm630"
[anomaly]
tick_s = 0.05
watch = [
  {{device = "pump-1", point = "current_l1", model = "block_novelty"}},
  {{device = "pump-2", point = "current_l1", model = "window_novelty"}},
]
"""


def runtime(tmp_path: Path) -> tuple[AnomalyRuntime, list[dict[str, Any]]]:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG)
    raised: list[dict[str, Any]] = []

    async def collect(records: list[dict[str, Any]]) -> None:
        raised.extend(records)

    config = load_config(cfg)
    return AnomalyRuntime(config, tmp_path, AlertEngine({}, "gw"), collect), raised


def series(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [10 + 2 * math.sin(i / 20) + rng.gauss(0, 0.1) for i in range(n)]


async def feed(rt: AnomalyRuntime, device: str, values: list[float], t0: datetime) -> None:
    task = asyncio.create_task(rt.run())
    try:
        for i, v in enumerate(values):
            ts = t0 + timedelta(seconds=i)
            rt.observe([Reading(device, "current_l1", v, "A", ts)])
            if i % 50 == 49:
                await asyncio.sleep(0.12)  # let a tick score what is buffered
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_level_shift_raises_an_anomaly_alert(tmp_path: Path) -> None:
    """A pump current that jumps far out of its pattern raises an anomaly alert with evidence."""
    rt, raised = runtime(tmp_path)
    values = series(1500) + [v + 40 for v in series(60, seed=8)]
    await feed(rt, "pump-1", values, datetime(2026, 11, 25, tzinfo=UTC))
    assert rt.status()["scored"] == len(values)
    anomalies = [a for a in raised if a["kind"] == "anomaly" and a["transition"] == "raised"]
    assert anomalies, "the shift should alarm"
    first = anomalies[0]
    assert first["device"] == "pump-1" and first["point"] == "current_l1"
    assert first["evidence"]["model"].startswith("block_novelty@")
    assert first["score"] > 0 and first["evidence"]["recent"]
    onset = first["ts"]
    assert onset >= "2026-11-25T00:25:00", "no alarm during the normal part (1500 s)"


async def test_model_update_keeps_the_other_streams_state(tmp_path: Path) -> None:
    """Installing a new version of one model: its streams keep state, other models untouched."""
    rt, _ = runtime(tmp_path)
    await feed(rt, "pump-1", series(300), datetime(2026, 11, 25, tzinfo=UTC))
    await feed(rt, "pump-2", series(300), datetime(2026, 11, 25, tzinfo=UTC))
    engine = rt.engine
    before = {k: engine._streams[k] for k in rt.streams}
    window_table = engine._models["window_novelty"].table
    block_table = engine._models["block_novelty"].table
    data = (default_model_dir() / "window_novelty" / "window_novelty.onnx").read_bytes()
    result = rt.install(
        "window_novelty", base64.b64encode(data).decode(), hashlib.sha256(data).hexdigest()
    )
    assert result["state_kept"] is True and result["version"]
    assert (tmp_path / "models" / "window_novelty" / "window_novelty.onnx").is_file()
    assert engine._models["window_novelty"].table is window_table, "same layout: state kept"
    assert engine._models["block_novelty"].table is block_table
    assert {k: engine._streams[k] for k in rt.streams} == before
    # A model that does not match its hash is refused, and nothing changes.
    try:
        rt.install("window_novelty", base64.b64encode(data).decode(), "00" * 32)
    except ValueError as exc:
        assert "sha256" in str(exc)
    else:
        raise AssertionError("a wrong hash must be refused")
