"""sd_notify: a real datagram socket stands in for systemd."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityedge.notify import Notifier, watchdog_interval_s


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: keeps every datagram with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[dict[str, str]]:
        """Every datagram waiting now, parsed into fields."""
        got = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return got
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), fields))
            got.append(fields)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Timestamp datagrams as the event loop sees them."""
        loop.add_reader(self.sock.fileno(), self.drain)

    def pings(self) -> list[float]:
        return [t for t, f in self.messages if f.get("WATCHDOG") == "1"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    with tempfile.TemporaryDirectory(prefix="ce-") as d:  # short: sun_path is 108 bytes
        fake = FakeSystemd(str(Path(d) / "notify"))
        yield fake
        fake.close()


def test_ready_status_stopping_arrive(systemd: FakeSystemd) -> None:
    """READY=1 (with STATUS), STATUS, RELOADING and STOPPING arrive as datagrams."""
    n = Notifier.from_env({"NOTIFY_SOCKET": systemd.address})
    assert n.enabled
    assert n.ready("polling 3 devices\non 1 bus")
    assert n.status("outbox 12 readings")
    assert n.reloading()
    assert n.stopping()
    n.close()
    got = systemd.drain()
    assert got[0] == {"READY": "1", "STATUS": "polling 3 devices on 1 bus"}
    assert got[1] == {"STATUS": "outbox 12 readings"}
    assert got[2]["RELOADING"] == "1" and int(got[2]["MONOTONIC_USEC"]) > 0
    assert got[3] == {"STOPPING": "1"}


def test_abstract_namespace_socket() -> None:
    """A '@name' $NOTIFY_SOCKET is the abstract namespace."""
    fake = FakeSystemd(f"@cityedge-test-{os.getpid()}")
    try:
        n = Notifier(fake.address)
        assert n.ready()
        n.close()
        assert fake.drain() == [{"READY": "1"}]
    finally:
        fake.close()


def test_no_socket_is_a_no_op() -> None:
    """Outside systemd every call returns False and nothing fails."""
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.watchdog() and not n.stopping()
    asyncio.run(asyncio.wait_for(n.watchdog_loop(), 1))  # returns at once


def test_missing_socket_counts_failures() -> None:
    """A socket path nobody listens on is counted, not raised."""
    n = Notifier("/nonexistent/notify")
    assert not n.ready()
    assert n.failed == 1
    n.close()


def test_watchdog_interval_from_environment() -> None:
    """The ping interval is half of WATCHDOG_USEC, only for the process it names."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({}) is None
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "200000"}
    assert Notifier.from_env(env).watchdog_s == 0.1


async def test_watchdog_pings_at_the_interval(systemd: FakeSystemd) -> None:
    """WATCHDOG=1 arrives every WATCHDOG_USEC / 2."""
    n = Notifier.from_env({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "100000"})
    loop = asyncio.get_running_loop()
    systemd.watch(loop)
    task = asyncio.create_task(n.watchdog_loop())
    try:
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.remove_reader(systemd.sock.fileno())
        n.close()
    pings = systemd.pings()
    assert 8 <= len(pings) <= 12, pings
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.03 < g < 0.1 for g in gaps), gaps


async def test_blocked_event_loop_stops_the_pings(systemd: FakeSystemd) -> None:
    """With the loop blocked (time.sleep in a callback) no ping arrives; then they resume."""
    n = Notifier(systemd.address, watchdog_s=0.05)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(n.watchdog_loop())
    during: list[dict[str, str]] = []
    done = asyncio.Event()

    def block() -> None:
        systemd.drain()  # what was sent before the block
        time.sleep(0.5)  # ten intervals
        during.extend(systemd.drain())
        done.set()

    try:
        await asyncio.sleep(0.2)
        before = [m for m in systemd.drain() if m.get("WATCHDOG")]
        loop.call_soon(block)
        await done.wait()
        await asyncio.sleep(0.2)
        after = [m for m in systemd.drain() if m.get("WATCHDOG")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        n.close()
    assert len(before) >= 3
    assert during == []
    assert len(after) >= 2
