"""Streaming anomaly detection on the gateway: ONNX models, batched per tick.

Runtime API::

    engine = AnomalyEngine(model_dir)          # folder with <name>/<name>.onnx
    engine.add_stream(key, "block_novelty")    # per point, model chosen by config
    scores = engine.step([(key, timestamp, value), ...])   # once per tick
    # -> [(key, score), ...] with score in [0, 1]

Contract:

* **Batched.** ``step`` takes at most one reading per stream and runs at most
  ONE onnxruntime call per model for the whole tick (a block model sends only
  the streams whose block of readings completed).
* **Causal.** A score depends only on the stream's readings up to and
  including the current one: a window model sees the last W readings (padded
  with the stream's first reading while it fills), a block model its memory
  of past block summaries and the range of the readings seen so far; the
  normalisation is a running statistic of earlier outputs. No series-wide
  minimum, maximum or mean is ever used.
* **Warm-up.** A new stream scores 0 for its first ``warmup`` readings (model
  metadata; 150 for both shipped models).
* **Suppression.** A non-zero score is reported only when it beats the
  stream's recent largest score (decaying), so one event alarms at its onset
  and not on every following reading; with ``block_novelty`` one event also
  alarms once across its channels (only a higher score within 72 readings).
* **Compact state.** ``AnomalyEngine.state_bytes_per_stream``: 6,624 bytes
  for ``block_novelty`` (the default; memory of 512 block summaries, a ring
  of 16 novelties per scale and 28 eight-byte values), 2,080 for ``window_novelty``
  (window of 512 and four scalars).
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
