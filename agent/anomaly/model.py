"""ONNX anomaly models: the session (loaded once) and the parameters in its metadata.

Two kinds, told apart by the ``kind`` metadata entry (``window`` when absent):

* ``window`` (:class:`WindowModel`): float32 ``window`` [N, W] -> ``logit`` [N],
  called for every reading (``window_novelty``).
* ``block`` (:class:`BlockModel`): float32 ``memory`` [N, M, 3] -> ``novelty``
  [N, 2] (fine and coarse scale), called only for the streams whose block of readings just completed
  (``block_novelty``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PostParams:
    """How raw model outputs become scores; read from the model's metadata.

    For a block model ``stats_alpha``, ``stats_min_count`` and
    ``suppress_half_life`` count blocks, ``warmup`` counts readings.
    A block model's suppression half-life grows with the stream's age from
    ``suppress_half_life`` to ``suppress_half_life_max`` blocks (older models
    without the key: fixed). ``record_scale`` > 0 turns on its record scores
    (:mod:`cityedge.anomaly.records`), whose suppression half-life
    ``record_half_life`` counts readings. ``sustain_blocks`` > 0 turns on the
    sustained part of the novelty (the mean novelty of the last
    ``sustain_blocks`` blocks against its own long-run mean and variance, rate
    ``sustain_alpha``, standard deviation widened by ``sustain_sd_floor``,
    weighted by ``sustain_weight``). ``event_readings`` > 0 turns on one
    alarm per event across the channels: within that many readings of a
    reported score, only a higher one is reported. ``envelope_blocks`` > 0
    (with records on) turns on envelope records over runs of that many
    blocks, once the memory holds ``envelope_history`` earlier runs, with a
    suppression half-life of ``envelope_half_life`` readings. Models without
    these keys have them off.
    """

    warmup: int
    stats_alpha: float
    stats_min_count: int
    score_scale: float
    suppress_half_life: float
    suppress_half_life_max: float = 0.0  # below suppress_half_life: fixed half-life
    record_scale: float = 0.0
    record_half_life: float = 300.0
    sustain_blocks: int = 0
    sustain_weight: float = 0.8
    sustain_alpha: float = 0.001
    sustain_min_count: int = 30
    sustain_sd_floor: float = 0.005
    event_readings: int = 0
    envelope_blocks: int = 0
    envelope_history: int = 128
    envelope_half_life: float = 3000.0


def _session(path: Path) -> ort.InferenceSession:
    # One thread: the agent runs inference on its own worker and a gateway has few cores.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        why = f"{type(exc).__name__}: {first}"
        raise ValueError(f"{path}: not a loadable ONNX model ({why})") from exc


class _OnnxModel:
    """Common part: session, name, version, post-processing and shipped thresholds."""

    kind = "window"

    def __init__(self, path: Path, session: ort.InferenceSession | None = None) -> None:
        self.path = path
        self.session = session if session is not None else _session(path)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.name: str = meta["name"]
            self.version: str = meta["version"]
            self.window = int(meta["window"])
            self.post = PostParams(
                warmup=int(meta["warmup"]),
                stats_alpha=float(meta["stats_alpha"]),
                stats_min_count=int(meta["stats_min_count"]),
                score_scale=float(meta["score_scale"]),
                suppress_half_life=float(meta["suppress_half_life"]),
                suppress_half_life_max=float(
                    meta.get("suppress_half_life_max", meta["suppress_half_life"])
                ),
                record_scale=float(meta.get("record_scale", "0")),
                record_half_life=float(meta.get("record_half_life", "300")),
                sustain_blocks=int(meta.get("sustain_blocks", "0")),
                sustain_weight=float(meta.get("sustain_weight", "0.8")),
                sustain_alpha=float(meta.get("sustain_alpha", "0.001")),
                sustain_min_count=int(meta.get("sustain_min_count", "30")),
                sustain_sd_floor=float(meta.get("sustain_sd_floor", "0.005")),
                event_readings=int(meta.get("event_readings", "0")),
                envelope_blocks=int(meta.get("envelope_blocks", "0")),
                envelope_history=int(meta.get("envelope_history", "128")),
                envelope_half_life=float(meta.get("envelope_half_life", "3000")),
            )
            if self.post.record_scale < 0 or self.post.record_half_life <= 0:
                raise ValueError("record_scale must be >= 0 and record_half_life > 0")
            bad = [k for k, v in dataclasses.asdict(self.post).items() if not math.isfinite(v)]
            if bad:
                raise ValueError(f"{', '.join(bad)}: must be finite numbers")
            if min(self.post.sustain_blocks, self.post.event_readings) < 0:
                raise ValueError("sustain_blocks and event_readings must be >= 0")
            if self.post.envelope_blocks < 0 or self.post.envelope_history < 1:
                raise ValueError("envelope_blocks must be >= 0 and envelope_history >= 1")
            if self.post.envelope_half_life <= 0:
                raise ValueError("envelope_half_life must be > 0")
            if not 0 < self.post.sustain_alpha <= 1:
                raise ValueError("sustain_alpha must be in (0, 1]")
            if min(self.post.sustain_weight, self.post.sustain_sd_floor) < 0:
                raise ValueError("sustain_weight and sustain_sd_floor must be >= 0")
            if self.post.suppress_half_life_max < self.post.suppress_half_life:
                raise ValueError("suppress_half_life_max must be >= suppress_half_life")
            self.thresholds = {
                k.removeprefix("threshold_"): float(v)
                for k, v in meta.items()
                if k.startswith("threshold_")
            }
            # SHA-256 of the labels file the thresholds were fitted on (if any),
            # so a benchmark can tell an in-sample score from an out-of-sample one.
            self.thresholds_labels_sha256: str | None = meta.get("thresholds_labels_sha256")
            self._read_meta(meta)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: model metadata incomplete or invalid: {exc}") from exc

    def _read_meta(self, meta: dict[str, str]) -> None:
        """Kind-specific metadata (none for window models)."""


class WindowModel(_OnnxModel):
    """An ONNX graph from ``window`` float32 [N, W] to ``logit`` float32 [N].

    The session is created once and every call scores a whole batch of streams.
    ``thresholds`` are the alarm levels the model ships with, per NAB cost
    profile, chosen by its training script on synthetic series.
    """

    kind = "window"

    def run(self, windows: FloatArray) -> FloatArray:
        """Raw logits for a batch of windows (one session call)."""
        out = self.session.run(["logit"], {"window": windows})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)


class BlockModel(_OnnxModel):
    """An ONNX graph from ``memory`` float32 [N, M, 3] to ``novelty`` float32 [N, 2].

    Each stream's readings are grouped in blocks of ``block`` readings; a
    block is summarised by its mean, maximum and minimum, and the last
    ``memory`` block summaries are the stream's memory (oldest first). The
    graph returns, per stream and per scale, the RMS distance from the most
    recent run to the nearest earlier, non-overlapping run in the memory:
    runs of ``length`` blocks (fine) and runs of ``length`` groups of
    ``coarse`` blocks (coarse). A scale whose run does not fit in the readings
    seen yet gives a non-finite distance. ``window`` (metadata) is
    ``block * memory``, the readings the memory spans.
    """

    kind = "block"

    def _read_meta(self, meta: dict[str, str]) -> None:
        self.block = int(meta["block"])
        self.length = int(meta["length"])
        self.memory = int(meta["memory"])
        self.coarse = int(meta["coarse"])
        if min(self.block, self.length, self.coarse) < 1 or self.memory < 2 * (
            self.coarse * self.length
        ):
            raise ValueError("block, length, coarse, memory out of range")
        k = self.post.envelope_blocks
        if k and self.memory - 2 * k + 1 < self.post.envelope_history:
            raise ValueError("envelope_blocks, envelope_history: the memory holds too few runs")

    def run(self, memory: FloatArray) -> FloatArray:
        """Nearest-shape distances for a batch of memories (one session call)."""
        out = self.session.run(["novelty"], {"memory": memory})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(memory), 2)


AnyModel = WindowModel | BlockModel


def load_model(model_dir: Path, model_name: str) -> AnyModel:
    """Load ``<model_dir>/<model_name>/<model_name>.onnx`` (either kind)."""
    path = model_dir / model_name / f"{model_name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"anomaly model {model_name!r} not found: {path}")
    session = _session(path)
    kind = session.get_modelmeta().custom_metadata_map.get("kind", "window")
    if kind == "block":
        return BlockModel(path, session)
    if kind == "window":
        return WindowModel(path, session)
    raise ValueError(f"{path}: unknown model kind {kind!r}")
