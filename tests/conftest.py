"""Shared fixtures: every test must leave no task or thread behind."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.peers.mqtt"]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread of its own running."""
    before = set(threading.enumerate())
    yield
    # Collect now, so an unclosed socket or file is blamed on the test that left it.
    gc.collect()
    deadline = time.monotonic() + 5.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"test leaked threads: {[t.name for t in extra]}"
