"""One ONNX window model: the session (loaded once) and the parameters in its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PostParams:
    """How raw model outputs become scores; read from the model's metadata."""

    warmup: int
    stats_alpha: float
    stats_min_count: int
    score_scale: float
    suppress_half_life: float


class WindowModel:
    """An ONNX graph from ``window`` float32 [N, W] to ``logit`` float32 [N].

    The session is created once and every call scores a whole batch of streams.
    ``thresholds`` are the alarm levels the model ships with, per NAB cost
    profile, chosen by its training script on synthetic series.
    Threads are limited to one: the agent runs inference on its own worker
    thread and a gateway has few cores.
    """

    def __init__(self, path: Path) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.name = meta["name"]
            self.version = meta["version"]
            self.window = int(meta["window"])
            self.post = PostParams(
                warmup=int(meta["warmup"]),
                stats_alpha=float(meta["stats_alpha"]),
                stats_min_count=int(meta["stats_min_count"]),
                score_scale=float(meta["score_scale"]),
                suppress_half_life=float(meta["suppress_half_life"]),
            )
            self.thresholds = {
                k.removeprefix("threshold_"): float(v)
                for k, v in meta.items()
                if k.startswith("threshold_")
            }
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: model metadata incomplete or invalid: {exc}") from exc

    def run(self, windows: FloatArray) -> FloatArray:
        """Raw logits for a batch of windows (one session call)."""
        out = self.session.run(["logit"], {"window": windows})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def load_model(model_dir: Path, model_name: str) -> WindowModel:
    """Load ``<model_dir>/<model_name>/<model_name>.onnx``."""
    path = model_dir / model_name / f"{model_name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"anomaly model {model_name!r} not found: {path}")
    return WindowModel(path)
