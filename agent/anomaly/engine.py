"""AnomalyEngine: many streams, a few models, one inference call per model per tick."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .block import BlockTable, score_block_rows
from .model import AnyModel, BlockModel, load_model
from .post import score_rows
from .state import StreamTable

Reading = tuple[Hashable, datetime, float]


@dataclass
class _ModelSlot:
    model: AnyModel
    table: StreamTable | BlockTable


@dataclass(frozen=True)
class StreamInfo:
    """Where a stream lives: its model and its row in that model's table."""

    model_name: str
    row: int


class AnomalyEngine:
    """Scores readings of many streams, batching each tick per model.

    ``model_dir`` holds one folder per model (``<name>/<name>.onnx``). Models
    are loaded on first use and kept; every stream keeps only its row of
    compact state (see :class:`StreamTable`).
    """

    def __init__(self, model_dir: Path | str | Sequence[Path]) -> None:
        # Several folders: the first holding a model wins (updates before shipped).
        dirs = [model_dir] if isinstance(model_dir, Path | str) else list(model_dir)
        self.model_dirs = [Path(d) for d in dirs]
        self.model_dir = self.model_dirs[0]
        self._models: dict[str, _ModelSlot] = {}
        self._streams: dict[Hashable, StreamInfo] = {}
        # Models loaded from a later folder because the first one's file did not load.
        self.passed_over: dict[str, str] = {}

    def find(self, model_name: str) -> Path:
        """The folder the model loads from (the first that has it)."""
        for d in self.model_dirs:
            if (d / model_name / f"{model_name}.onnx").is_file():
                return d
        return self.model_dirs[-1]

    def models(self) -> dict[str, str]:
        """Loaded models and their versions."""
        return {name: slot.model.version for name, slot in self._models.items()}

    def reload_model(self, model_name: str) -> tuple[str | None, str, bool]:
        """Load a new version of a model in place: (old version, new version, state kept).

        Streams of other models are untouched. The streams of this model keep
        their state when the new version has the same state layout (window, or
        memory, block and coarse scale); a block model's new parts (a
        sustained ring of another length) then start fresh beside the kept
        memory and statistics. Otherwise they restart their warm-up on the
        new version.
        """
        new = load_model(self.find(model_name), model_name)
        self.passed_over.pop(model_name, None)
        slot = self._models.get(model_name)
        if slot is None:
            self._models[model_name] = _ModelSlot(new, _table_for(new))
            return None, new.version, True
        old = slot.model
        same = type(old) is type(new) and _layout(old) == _layout(new)
        if same:
            slot.model = new
            return old.version, new.version, True
        old_table = slot.table
        slot.model, slot.table = new, _table_for(new)
        carry = isinstance(old_table, BlockTable) and isinstance(slot.table, BlockTable)
        carry = carry and _layout(old, memory_only=True) == _layout(new, memory_only=True)
        for key, info in list(self._streams.items()):
            if info.model_name == model_name:
                row = slot.table.allocate()
                if carry:
                    assert isinstance(slot.table, BlockTable) and isinstance(old_table, BlockTable)
                    slot.table.adopt(old_table, info.row, row)
                self._streams[key] = StreamInfo(model_name, row)
        return old.version, new.version, carry

    def add_stream(self, key: Hashable, model_name: str) -> None:
        """Start watching ``key`` with ``model_name``; a new stream warms up silently."""
        if key in self._streams:
            raise KeyError(f"stream {key!r} already added")
        slot = self._slot(model_name)
        self._streams[key] = StreamInfo(model_name, slot.table.allocate())

    def remove_stream(self, key: Hashable) -> None:
        info = self._streams.pop(key)
        self._models[info.model_name].table.release(info.row)

    def has_stream(self, key: Hashable) -> bool:
        return key in self._streams

    def model_of(self, key: Hashable) -> AnyModel:
        """The model that watches stream ``key``."""
        return self._models[self._streams[key].model_name].model

    def model_of_name(self, model_name: str) -> AnyModel:
        """The loaded model ``model_name`` (loading it on first use)."""
        return self._slot(model_name).model

    def step(self, batch: Iterable[Reading]) -> list[tuple[Hashable, float]]:
        """Score one tick: at most one reading per stream, in any order.

        Returns ``(key, score)`` in the order of ``batch``. A reading that is
        not finite scores 0 and leaves its stream's state unchanged.
        """
        items = list(batch)
        scores = [0.0] * len(items)
        groups: dict[str, tuple[list[int], list[int], list[float]]] = {}
        seen: set[Hashable] = set()
        for pos, (key, _ts, value) in enumerate(items):
            if key in seen:
                raise ValueError(f"stream {key!r} appears twice in one tick")
            seen.add(key)
            info = self._streams[key]
            if not math.isfinite(value):
                continue
            g = groups.setdefault(info.model_name, ([], [], []))
            g[0].append(pos)
            g[1].append(info.row)
            g[2].append(value)
        for name, (positions, rows, values) in groups.items():
            out = self._score(self._models[name], rows, values)
            for pos, s in zip(positions, out, strict=True):
                scores[pos] = s
        return [(item[0], scores[i]) for i, item in enumerate(items)]

    def _score(self, slot: _ModelSlot, rows: Sequence[int], values: Sequence[float]) -> list[float]:
        r = np.asarray(rows, dtype=np.intp)
        model, table = slot.model, slot.table
        if isinstance(model, BlockModel):
            assert isinstance(table, BlockTable)
            v64 = np.asarray(values, dtype=np.float64)
            return [float(s) for s in score_block_rows(model, table, r, v64)]
        assert isinstance(table, StreamTable)
        windows = table.push(r, np.asarray(values, dtype=np.float32))
        raw = model.run(windows)
        return [float(s) for s in score_rows(table, r, raw, model.post)]

    def _slot(self, model_name: str) -> _ModelSlot:
        slot = self._models.get(model_name)
        if slot is None:
            model = self._load_first_good(model_name)
            slot = _ModelSlot(model, _table_for(model))
            self._models[model_name] = slot
        return slot

    def _load_first_good(self, model_name: str) -> AnyModel:
        """The model from the first folder whose file loads (an update before the shipped one).

        A damaged update (a file that is not a loadable model) must not stop
        the streams: the next folder's version is used and the reason kept in
        ``passed_over``. With no loadable file, the first folder's error.
        """
        holders = [d for d in self.model_dirs if (d / model_name / f"{model_name}.onnx").is_file()]
        if not holders:
            return load_model(self.model_dirs[-1], model_name)  # FileNotFoundError
        errors: list[ValueError] = []
        for folder in holders:
            try:
                model = load_model(folder, model_name)
            except ValueError as exc:
                errors.append(exc)
                continue
            if errors:
                self.passed_over[model_name] = str(errors[0])
            return model
        raise errors[0]

    def state_bytes_per_stream(self, model_name: str) -> int:
        """State one stream of ``model_name`` costs, in bytes."""
        model = self._slot(model_name).model
        if isinstance(model, BlockModel):
            return BlockTable.bytes_per_stream(model.memory, model.post.sustain_blocks)
        return StreamTable.bytes_per_stream(model.window)


def _table_for(model: AnyModel) -> StreamTable | BlockTable:
    if isinstance(model, BlockModel):
        return BlockTable.for_model(model)
    return StreamTable(model.window)


def _layout(model: AnyModel, memory_only: bool = False) -> tuple[object, ...]:
    """What a stream's state means: equal layouts can carry state across versions.

    With ``memory_only``, a block model's layout without its sustained ring:
    equal ones carry everything but the ring (:meth:`BlockTable.adopt`).
    """
    if isinstance(model, BlockModel):
        layout: tuple[object, ...] = ("block", model.memory, model.block, model.coarse)
        return layout if memory_only else (*layout, model.post.sustain_blocks)
    return ("window", model.window)
