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


CELL = "33N_500_390000_5820000"


def series(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [10 + 2 * math.sin(i / 20) + rng.gauss(0, 0.1) for i in range(n)]


async def feed(rt: AnomalyRuntime, device: str, values: list[float], t0: datetime) -> None:
    task = asyncio.create_task(rt.run())
    try:
        for i, v in enumerate(values):
            ts = t0 + timedelta(seconds=i)
            rt.observe([Reading(device, "current_l1", v, "A", ts, cell=CELL)])
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
    assert (first["unit"], first["cell"]) == ("A", CELL), "labelled as threshold alerts are"
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


def _install(rt: AnomalyRuntime, name: str, data: bytes) -> dict[str, Any]:
    return rt.install(name, base64.b64encode(data).decode(), hashlib.sha256(data).hexdigest())


def test_bytes_that_are_not_a_model_are_refused_and_the_installed_version_stays(
    tmp_path: Path,
) -> None:
    """A signed update whose bytes do not load (junk, a truncated file) changes nothing."""
    rt, _ = runtime(tmp_path)
    good = (default_model_dir() / "window_novelty" / "window_novelty.onnx").read_bytes()
    installed = tmp_path / "models" / "window_novelty" / "window_novelty.onnx"
    version = _install(rt, "window_novelty", good)["version"]
    for junk in (b"not onnx at all\n", good[: len(good) // 2]):
        try:
            _install(rt, "window_novelty", junk)
        except ValueError as exc:
            assert "does not load" in str(exc) and "not a loadable ONNX model" in str(exc)
        else:
            raise AssertionError("bytes that are not a model must be refused")
        assert installed.read_bytes() == good, "the installed update is kept"
        assert rt.engine.models()["window_novelty"] == version
    assert not (tmp_path / "models" / ".staging").exists()


def test_a_model_is_installed_only_under_its_own_name(tmp_path: Path) -> None:
    """window_novelty's bytes sent as block_novelty are refused: its streams keep their model."""
    rt, _ = runtime(tmp_path)
    window = (default_model_dir() / "window_novelty" / "window_novelty.onnx").read_bytes()
    try:
        _install(rt, "block_novelty", window)
    except ValueError as exc:
        assert "calls itself 'window_novelty'" in str(exc)
    else:
        raise AssertionError("a model must not be installed under another name")
    assert not (tmp_path / "models" / "block_novelty").exists()
    assert rt.engine.model_of_name("block_novelty").name == "block_novelty"


def test_a_damaged_update_on_disk_falls_back_to_the_shipped_model(tmp_path: Path) -> None:
    """A broken file in the updates folder (a disk fault, an old bug) must not stop the agent."""
    folder = tmp_path / "models" / "window_novelty"
    folder.mkdir(parents=True)
    (folder / "window_novelty.onnx").write_bytes(b"\x00garbage")
    rt, _ = runtime(tmp_path)
    model = rt.engine.model_of_name("window_novelty")
    assert model.path == default_model_dir() / "window_novelty" / "window_novelty.onnx"
    passed = rt.status()["updates_passed_over"]
    assert "not a loadable ONNX model" in passed["window_novelty"]
    assert len(rt.streams) == 2 and not rt.status()["unavailable"]
    shipped = hashlib.sha256(model.path.read_bytes()).hexdigest()
    assert rt.hashes()["window_novelty"] == shipped, "attestation names the file in use"


def test_an_anomaly_alert_lasts_its_event_then_a_new_event_raises_again() -> None:
    """The model reports an event once and then scores 0: the alert must not clear at once."""
    from cityedge.anomaly_runtime import ANOMALY_COOLDOWN_S, rule_for

    rule = rule_for(0.361, "block_novelty@5", event_readings=72)
    engine = AlertEngine({}, "gw")
    t0 = datetime(2026, 12, 7, tzinfo=UTC)

    def score(i: int, s: float, t: datetime | None = None) -> dict[str, Any] | None:
        when = t or t0 + timedelta(seconds=i)
        return engine.on_score(rule, "pump-1", "flow", when, 300.0, s, unit="L/s", cell="c")

    raised = score(0, 0.99)
    assert raised is not None and raised["transition"] == "raised" and raised["level"] == "red"
    assert all(score(i, 0.0) is None for i in range(1, 72)), "71 calm readings: still raised"
    cleared = score(72, 0.0)
    assert cleared is not None and cleared["transition"] == "cleared"
    assert cleared["alert_id"] == raised["alert_id"]
    # A lower-level event right after the clear is held back for the short cool-down only.
    assert score(0, 0.5, t0 + timedelta(seconds=80)) is None
    again = score(0, 0.5, t0 + timedelta(seconds=72 + ANOMALY_COOLDOWN_S + 1))
    assert again is not None and again["transition"] == "raised"
    assert again["alert_id"] != raised["alert_id"]


def test_two_installs_at_once_both_land(tmp_path: Path) -> None:
    """Two install_model commands run as two tasks: each stages on its own, one at a time."""
    import threading

    rt, _ = runtime(tmp_path)
    errors: list[BaseException] = []

    def install(name: str) -> None:
        data = (default_model_dir() / name / f"{name}.onnx").read_bytes()
        try:
            _install(rt, name, data)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    for _ in range(5):
        threads = [threading.Thread(target=install, args=(n,)) for n in MODELS_USED]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []
    assert not list((tmp_path / "models").glob(".staging*"))
    for name in MODELS_USED:
        installed = tmp_path / "models" / name / f"{name}.onnx"
        assert installed.read_bytes() == (default_model_dir() / name / f"{name}.onnx").read_bytes()


MODELS_USED = ("window_novelty", "block_novelty")
