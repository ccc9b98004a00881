"""Signing through the whole agent: a signer daemon, the agent process, a broker, the verifier."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.attest import verify_record
from cityedge.signing import keys
from cityedge.signing.algorithms import ED25519, PublicKey, SoftwareKey
from cityedge.signing.downlink import new_command, sign_command
from cityedge.signing.verify import Verifier
from cityedge.uplink.link import stop_loop
from tests.peers.agent import (
    SimProcess,
    start_agent,
    stop_agent,
    wait_ready,
    wait_until,
    write_config,
)
from tests.peers.mqtt import Broker, Recorder
from tests.test_signing_server import SignerProcess, machine_id

BASE = "cityedge/test-site/gw-test"


def raw_messages(rec: Recorder, suffix: str) -> list[bytes]:
    with rec.lock:
        return [p for t, p in rec.messages if t.endswith(suffix)]


def scan_memory(pid: int | str, needle: bytes) -> bool:
    """Whether ``needle`` is anywhere in the readable memory of a process."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if not m or not m.group(3).startswith("r"):
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    found = True
                    break
            except (OSError, ValueError, OverflowError):
                continue
    return found


def send(port: int, topic: str, payload: bytes) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="city-hub", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    stop_loop(c)


def test_signed_chain_signer_outage_memory_and_downlink(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """Batches verify; the signer stopped holds them back; the agent never holds the key."""
    mid = machine_id(tmp_path)
    keys.init(tmp_path / "keys", ED25519, machine_id_file=mid)
    gw_key = keys.public_keys(tmp_path / "keys")[0]
    private = keys.load_active(tmp_path / "keys", machine_id_file=mid)
    assert isinstance(private, SoftwareKey)
    secret = private.seeds()
    authority = SoftwareKey.generate(ED25519)
    signer = SignerProcess(tmp_path, tmp_path / "keys", mid)
    signer.start()
    sim = SimProcess(units=[1])
    sim.start()
    cfg = write_config(
        tmp_path / "gw.toml",
        broker_port=broker.port,
        modbus_port=sim.port,
        units=[1],
        poll_s=0.2,
        extra=(
            f'[signing]\nsocket = "{signer.socket}"\n'
            f'[downlink]\nauthority_keys = ["{authority.public.to_text()}"]\n'
        ),
    )
    log = tmp_path / "agent.log"
    proc = start_agent(cfg, log)
    try:
        wait_ready(tmp_path / "control.sock")
        wait_until(lambda: len(raw_messages(recorder, "/telemetry")) >= 3, 20, "signed batches")
        # Attestation: retained, signed by the gateway key.
        wait_until(lambda: raw_messages(recorder, "/attestation"), 20, "attestation")
        att = json.loads(raw_messages(recorder, "/attestation")[-1])
        assert verify_record(att, gw_key)
        assert att["record"]["profiles"]["eastron/sdm630"]
        # The agent's memory never holds the private key (the scan does find it here).
        assert scan_memory("self", secret)
        assert not scan_memory(proc.pid, secret)
        # Signer stopped: nothing leaves unsigned; readings wait in the outbox.
        signer.stop()
        time.sleep(1.0)
        before = len(raw_messages(recorder, "/telemetry"))
        time.sleep(2.0)
        assert len(raw_messages(recorder, "/telemetry")) <= before + 8  # the window in flight
        stalled = len(raw_messages(recorder, "/telemetry"))
        time.sleep(1.5)
        assert len(raw_messages(recorder, "/telemetry")) == stalled
        signer.start()
        wait_until(lambda: len(raw_messages(recorder, "/telemetry")) > stalled + 3, 30, "resumed")
        # Signed downlink: good command answered; bad ones refused with a reason.
        ok = sign_command(new_command("status", {}, "gw-test"), authority)
        send(broker.port, f"{BASE}/cmd", ok)
        forged = sign_command(new_command("status", {}, "gw-test"), SoftwareKey.generate(ED25519))
        send(broker.port, f"{BASE}/cmd", forged)
        old = sign_command(new_command("status", {}, "gw-test", now=time.time() - 3600), authority)
        send(broker.port, f"{BASE}/cmd", old)
        send(broker.port, f"{BASE}/cmd", ok)  # the same nonce again
        write = new_command("write_point", {"device": "meter-1", "point": "demand_period",
                                            "value": 9999}, "gw-test")  # fmt: skip
        send(broker.port, f"{BASE}/cmd", sign_command(write, authority))

        def results() -> list[dict[str, object]]:
            return [e for e in recorder.events() if e.get("type") == "command_result"]

        wait_until(lambda: len(results()) >= 5, 20, "five command results")
        got = results()
        assert sum(1 for r in got if r["ok"]) == 1
        # The status it answered carries the signer's latency (the metrics' summary).
        status = next(r for r in got if r["ok"])["result"]
        assert isinstance(status, dict)
        signer_status = status["signer"]
        assert signer_status["latency_count"] > 0 and signer_status["latency_sum_s"] > 0
        assert signer_status["failures"] > 0  # the outage above
        assert status["uplink"]["batches_nacked"] == 0
        errors = " | ".join(str(r.get("error")) for r in got if not r["ok"])
        for reason in ("bad_signature", "expired", "replayed_nonce", "not_allowed"):
            assert reason in errors, errors
        assert "outside" in errors
        # Each refusal carries its reason code; a signed command refused for its age,
        # nonce or policy is answered under its own id (the nonce), so the hub can match it.
        refused = {r["reason"]: r for r in got if not r["ok"]}
        assert set(refused) == {"bad_signature", "expired", "replayed_nonce", "not_allowed"}
        for reason in ("expired", "replayed_nonce", "not_allowed"):
            assert isinstance(refused[reason]["id"], str) and len(refused[reason]["id"]) >= 16
            assert refused[reason]["cmd"] in ("status", "write_point")
        assert refused["bad_signature"]["id"] is None  # a forgery names nothing we trust
        # A key rotated under the running signer: the retained keys topic follows
        # (with the rotation statement), so a hub that learns keys from it verifies on.
        keys.rotate(tmp_path / "keys", ED25519, machine_id_file=mid)
        new_active = keys.public_keys(tmp_path / "keys")[-1].key_id.hex()

        def announced() -> bool:
            docs = [json.loads(p) for p in raw_messages(recorder, "/keys")]
            return any(d.get("active") == new_active and d.get("rotations") for d in docs)

        wait_until(announced, 20, "the rotated key on the keys topic")
        assert stop_agent(proc, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sim.stop()
        signer.stop()
    # The hub's verifier: every batch verifies, the chain continues across the outage.
    verifier = Verifier({"gw-test": [gw_key]})
    findings = []
    with recorder.lock:
        msgs = list(recorder.messages)
    for topic, payload in msgs:
        if topic.endswith(("/telemetry", "/alerts", "/events", "/keys")):
            findings += verifier.feed(topic, payload)
    findings += verifier.finish()
    bad = [f for f in findings if f.kind not in ("duplicate",)]
    assert bad == [], bad
    report = verifier.report()["gw-test"]
    assert report.verified >= 5
    assert isinstance(PublicKey.from_text(gw_key.to_text()), PublicKey)
