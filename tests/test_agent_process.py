"""Whole-agent tests: `cityedge run` as a process, killed and restarted."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

from tests.peers.agent import (
    SimProcess,
    kill9,
    outbox_seqs,
    outbox_waiting,
    start_agent,
    stop_agent,
    wait_ready,
    wait_until,
    write_config,
)
from tests.peers.mqtt import Broker, Recorder

KILLS = 22
WINDOW = 8


def test_sigkill_loses_no_accepted_reading(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """SIGKILL at random moments, 22 times: every accepted reading reaches the subscriber."""
    rng = random.Random(20261125)
    sim = SimProcess(units=[1, 2, 3])
    sim.start()
    config = write_config(
        tmp_path / "gw.toml",
        broker_port=broker.port,
        modbus_port=sim.port,
        units=[1, 2, 3],
        extra_uplink=f"max_inflight_batches = {WINDOW}\n",
    )
    outbox = tmp_path / "outbox.sqlite"
    log = tmp_path / "agent.log"
    at_kill: set[int] = set()
    try:
        for _ in range(KILLS):
            proc = start_agent(config, log)
            # Random moments: during start-up, mid-poll, mid-publish.
            time.sleep(rng.uniform(0.2, 1.6))
            assert proc.poll() is None, log.read_text()[-2000:]
            kill9(proc)
            at_kill |= outbox_seqs(outbox)
        proc = start_agent(config, log)
        wait_ready(tmp_path / "control.sock")
        assert stop_agent(proc, log) == 0
        # Let the last restart drain whatever is left, then stop cleanly.
        proc = start_agent(config, log)
        wait_ready(tmp_path / "control.sock")  # an empty outbox must not end the wait early
        sim.stop()  # no new readings: the outbox can only shrink now
        wait_until(lambda: outbox_waiting(outbox) == 0, 60, "outbox drained")
        assert stop_agent(proc, log) == 0
    finally:
        sim.stop()
    recorder.wait_for(1)
    # Every row the outbox accepted: readings, and the alerts and events around them
    # (a device going unreachable when the simulator stops raises a device-down alert).
    received = [*recorder.readings(), *recorder.alerts(), *recorder.events()]
    seqs = Counter(int(r["seq"]) for r in received)
    dups = sum(n - 1 for n in Counter(str(b["batch"]) for b in recorder.batches()).values())
    print(f"readings={len(seqs)} caught_at_kill={len(at_kill)} dup_batches={dups}")
    assert at_kill, "the kills should have caught readings in the outbox"
    missing = at_kill - set(seqs)
    assert not missing, f"{len(missing)} accepted readings never arrived"
    # Every reading ever accepted got a seq; the seqs are contiguous.
    top = max(seqs)
    assert set(seqs) == set(range(1, top + 1)), "a gap means an accepted reading was lost"
    # Duplicates are whole batches, re-sent under the same id, bounded by the window.
    batches = recorder.batches()
    ids = Counter(str(b["batch"]) for b in batches)
    dup_batches = sum(n - 1 for n in ids.values())
    assert dup_batches <= (KILLS + 2) * WINDOW
    by_id: dict[str, list[int]] = {}
    for b in batches:
        items = b.get("readings") or b.get("alerts") or b.get("events") or []
        got = [int(r["seq"]) for r in items]  # type: ignore[attr-defined]
        assert by_id.setdefault(str(b["batch"]), got) == got, "a repeated id carries the same data"
    dup_readings = sum(n - 1 for n in seqs.values())
    assert dup_readings == sum(len(by_id[i]) * (n - 1) for i, n in ids.items()), (
        "every duplicate reading belongs to a repeated batch"
    )


def test_last_will_marks_a_killed_gateway_offline(tmp_path: Path, broker: Broker) -> None:
    """Online is retained while the agent runs; SIGKILL leaves a retained offline state."""
    import json

    sim = SimProcess(units=[1])
    sim.start()
    config = write_config(
        tmp_path / "gw.toml", broker_port=broker.port, modbus_port=sim.port, units=[1]
    )
    state_topic = "cityedge/test-site/gw-test/state"
    try:
        proc = start_agent(config, tmp_path / "agent.log")

        def retained() -> dict[str, object] | None:
            r = Recorder(broker.port, state_topic)
            r.start()
            time.sleep(0.2)
            r.stop()
            return json.loads(r.messages[-1][1]) if r.messages else None

        wait_until(lambda: (retained() or {}).get("state") == "online", 20, "online state")
        kill9(proc)
        wait_until(lambda: (retained() or {}).get("state") == "offline", 20, "offline state")
        assert (retained() or {}).get("reason") == "connection_lost"
        proc = start_agent(config, tmp_path / "agent.log")
        wait_until(lambda: (retained() or {}).get("state") == "online", 20, "online again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert (retained() or {}).get("reason") == "shutdown"
    finally:
        sim.stop()
