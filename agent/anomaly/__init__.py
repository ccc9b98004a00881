"""Streaming anomaly detection on the gateway: ONNX window models, batched per tick.

Runtime API::

    engine = AnomalyEngine(model_dir)          # folder with <name>/<name>.onnx
    engine.add_stream(key, "window_novelty")   # per point, model chosen by config
    scores = engine.step([(key, timestamp, value), ...])   # once per tick
    # -> [(key, score), ...] with score in [0, 1]

Contract:

* **Batched.** ``step`` takes at most one reading per stream and runs ONE
  onnxruntime call per model for the whole tick.
* **Causal.** A score depends only on the stream's readings up to and
  including the current one: the model sees a window of the last W readings
  (padded with the stream's first reading while it fills) and the
  normalisation is a running statistic of earlier outputs. No series-wide
  minimum, maximum or mean is ever used.
* **Warm-up.** A new stream scores 0 for its first ``warmup`` readings (model
  metadata; 150 for ``window_novelty``).
* **Suppression.** A non-zero score is reported only when it beats the
  stream's recent largest score (decaying), so one event alarms at its onset
  and not on every following reading.
* **Compact state.** Per stream: the window (float32, W values) and four
  scalars, ``StreamTable.bytes_per_stream(W)`` bytes (2,080 for W = 512).
* Non-finite readings score 0 and leave the state unchanged.

The NAB harness factories are :func:`cityedge.anomaly.nab.make` and
:func:`cityedge.anomaly.nab.make_batch`.
"""

from .block import BlockTable
from .engine import AnomalyEngine, Reading, StreamInfo
from .model import AnyModel, BlockModel, PostParams, WindowModel, load_model
from .state import StreamTable

__all__ = [
    "AnomalyEngine",
    "AnyModel",
    "BlockModel",
    "BlockTable",
    "PostParams",
    "Reading",
    "StreamInfo",
    "StreamTable",
    "WindowModel",
    "load_model",
]
