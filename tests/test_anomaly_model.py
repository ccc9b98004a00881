"""The shipped window_novelty model: reproducible from its script, small, self-describing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from cityedge.anomaly import BlockModel, load_model

MODELS = Path(__file__).resolve().parents[1] / "models"
NAB = Path(__file__).resolve().parents[2] / "shared" / "nab"
NAME = "window_novelty"


def test_model_is_small_and_carries_its_parameters() -> None:
    """The .onnx is under 1 MB and its metadata names window, warm-up and thresholds."""
    path = MODELS / NAME / f"{NAME}.onnx"
    assert path.stat().st_size < 1_000_000
    model = load_model(MODELS, NAME)
    assert model.name == NAME
    assert model.window == 512
    assert model.post.warmup > 0
    assert set(model.thresholds) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


def test_train_script_reproduces_the_shipped_model(tmp_path: Path) -> None:
    """Running train.py again gives the committed .onnx byte for byte."""
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    script = MODELS / NAME / "train.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        check=True,
        timeout=110,
        capture_output=True,
    )
    shipped = (MODELS / NAME / f"{NAME}.onnx").read_bytes()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(shipped).digest()


BLOCK = "block_novelty"


def test_block_model_is_small_and_carries_its_parameters() -> None:
    """block_novelty: kind, block, length, memory, warm-up and shipped thresholds."""
    path = MODELS / BLOCK / f"{BLOCK}.onnx"
    assert path.stat().st_size < 100_000
    model = load_model(MODELS, BLOCK)
    assert isinstance(model, BlockModel)
    assert model.name == BLOCK
    assert model.window == model.block * model.memory
    assert model.memory >= 2 * model.length
    assert model.post.warmup > 0
    assert set(model.thresholds) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert model.post.record_scale > 0 and model.post.record_half_life > 0
    if NAB.is_dir():  # the thresholds name the labels they were fitted on
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
        import nab_scorer

        labels = nab_scorer.load_labels(NAB / "labels" / "combined_windows.json")
        assert model.thresholds_labels_sha256 == nab_scorer.labels_digest(labels)


def test_block_train_script_reproduces_the_shipped_model(tmp_path: Path) -> None:
    """block_novelty/train.py --nab ../shared/nab gives the committed .onnx byte for byte."""
    pytest.importorskip("onnx")
    if not NAB.is_dir():
        pytest.skip("../shared/nab is not there (the shipped thresholds are fitted on it)")
    out = tmp_path / "m.onnx"
    subprocess.run(
        [sys.executable, str(MODELS / BLOCK / "train.py"), "--out", str(out), "--nab", str(NAB)],
        check=True,
        timeout=110,
        capture_output=True,
    )
    shipped = (MODELS / BLOCK / f"{BLOCK}.onnx").read_bytes()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(shipped).digest()
