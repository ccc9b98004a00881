"""What setup.cfg installs matches the tree (package_dir maps agent/ and drivers/)."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def test_every_package_is_listed() -> None:
    """Each folder with an __init__.py under agent/ or drivers/ is an installed package."""
    listed = set(_setup()["options"]["packages"].split())
    found = set()
    for root, name in (("agent", "cityedge"), ("drivers", "cityedge.drivers")):
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_every_profile_vendor_is_installed() -> None:
    """Each vendor folder of firmware-profiles/ is in data_files, so installs carry it."""
    data = _setup()["options.data_files"]
    vendors = {p.name for p in (REPO / "firmware-profiles").iterdir() if p.is_dir()}
    prefix = "share/cityedge/firmware-profiles/"
    assert {k[len(prefix) :] for k in data if k.startswith(prefix)} == vendors


def test_every_model_is_installed() -> None:
    """Each model folder with an .onnx file is in data_files, so installs can load it."""
    data = _setup()["options.data_files"]
    models = {p.parent.name for p in (REPO / "models").glob("*/*.onnx")}
    prefix = "share/cityedge/models/"
    assert {k[len(prefix) :] for k in data if k.startswith(prefix)} == models
