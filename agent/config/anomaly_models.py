"""The anomaly models a config or profile may name: those the agent can load.

The agent loads a model from the first of ``<state_dir>/models`` (new models
and versions installed by the signed ``install_model`` command) and
``[anomaly] model_dir`` or the shipped models
(:class:`cityedge.anomaly_runtime.AnomalyRuntime`). A point whose model is in
neither is never watched, and a model installed later is only picked up by
the next config reload: so a name that is not installed is a config error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cityedge.config.checks import Context, did_you_mean, text
from cityedge.config.model import AnomalyConfig, StorageConfig
from cityedge.config.toml_lines import Key

# The same rule as the install_model command's (cityedge.anomaly_runtime.MODEL_NAME).
MODEL = text(r"[a-z0-9_]{1,64}", hint="a model folder name, e.g. block_novelty")


class InstalledModels:
    """The model names in the agent's model folders, read on first use."""

    def __init__(self, folders: Sequence[Path | None]) -> None:
        self._folders = list(folders)  # None: the shipped models, looked up when needed
        self._names: list[str] | None = None
        self._readable = True

    @classmethod
    def of(cls, storage: StorageConfig, anomaly: AnomalyConfig) -> InstalledModels:
        """The folders the agent of this config loads models from, in its order."""
        state_dir = storage.state_root
        return cls([state_dir / "models", anomaly.model_dir])

    def folders(self) -> list[Path]:
        if None in self._folders:
            # Imported here: it brings onnxruntime, which a config without models never needs.
            from cityedge.anomaly.nab import default_model_dir

            self._folders = [default_model_dir() if f is None else f for f in self._folders]
        return [f for f in self._folders if f is not None]

    def names(self) -> list[str]:
        """Every ``<name>`` with a ``<folder>/<name>/<name>.onnx``, sorted."""
        if self._names is None:
            found: set[str] = set()
            for folder in self.folders():
                try:
                    with os.scandir(folder) as entries:
                        found |= {e.name for e in entries if _is_model(Path(e.path))}
                except FileNotFoundError:
                    continue  # no updates installed yet, or no such folder
                except OSError:
                    self._readable = False  # e.g. a state folder this user may not read
            self._names = sorted(found)
        return self._names

    def check(self, ctx: Context, key: Key, name: str) -> None:
        """Report ``name`` at ``key`` unless it is installed (or a folder cannot be read)."""
        names = self.names()
        if name in names or not self._readable:
            return
        where = " or ".join(str(f) for f in self.folders())
        allowed = f"{', '.join(names) or 'none'}, from {where}"
        allowed += " (a new model: install it first, with the install_model command)"
        ctx.report(key, f"unknown anomaly model{did_you_mean(name, names)}", allowed, name)


def _is_model(folder: Path) -> bool:
    try:
        return (folder / f"{folder.name}.onnx").is_file()
    except OSError:
        return False
