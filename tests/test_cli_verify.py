"""`cityedge verify` and `cityedge capture`: captures with each kind of damage, a live Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityedge.cli import main
from cityedge.cli_verify import live_topics
from cityedge.signing.algorithms import ED25519, HYBRID, SoftwareKey
from cityedge.signing.chain import ChainState
from cityedge.signing.verify import Message, read_capture, write_capture
from cityedge.uplink.link import stop_loop
from tests.peers.mqtt import Broker
from tests.test_signing_verify import GW, TOPIC, capture, rotation


@pytest.fixture(scope="module")
def key() -> SoftwareKey:
    return SoftwareKey.generate(ED25519)


@pytest.fixture(scope="module")
def clean(key: SoftwareKey) -> list[Message]:
    return capture(key, 20)[0]


def keys_file(path: Path, *lines: str) -> Path:
    path.write_text("# the hub's trusted keys\n\n" + "\n".join(lines) + "\n")
    return path


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["verify", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clean_capture_no_finding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: SoftwareKey, clean: list[Message]
) -> None:
    """A clean capture (plus a state message): 20 verified, no finding, exit 0."""
    cap = tmp_path / "cap.jsonl"
    write_capture(cap, [*clean, Message(TOPIC.replace("telemetry", "state"), b"online")])
    kf = keys_file(tmp_path / "keys", f"{GW} {key.public.to_text()}")
    code, out, _ = verify(capsys, str(cap), "--keys", str(kf))
    assert code == 0, out
    assert "20 message(s) checked, 1 on other topics skipped" in out
    row = next(line.split() for line in out.splitlines() if line.startswith(GW))
    assert row == [GW, "20", "0", "0", "0", "0", "0"]
    assert out.splitlines()[-1].startswith("OK:")


def test_flip_drop_replay_swap_each_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: SoftwareKey, clean: list[Message]
) -> None:
    """One flipped byte, one dropped batch, one replayed, two swapped: each reported, exit 1."""
    msgs = list(clean)
    flipped = bytearray(msgs[7].payload)
    flipped[200] ^= 0x01
    msgs[7] = Message(TOPIC, bytes(flipped))  # seq 8: tampered (and so missing)
    msgs[14], msgs[15] = msgs[15], msgs[14]  # seqs 15, 16: reordered
    msgs.append(msgs[3])  # seq 4 again: duplicate
    del msgs[10]  # seq 11: gap
    cap = tmp_path / "cap.jsonl"
    write_capture(cap, msgs)
    kf = keys_file(tmp_path / "keys", f"{GW} {key.public.to_text()}")
    code, out, _ = verify(capsys, str(cap), "--keys", str(kf), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["passed"] is False
    found = sorted((f["kind"], f.get("seq")) for f in doc["findings"])
    assert found == [("duplicate", 4), ("gap", 8), ("gap", 11), ("reordered", 15),
                     ("tampered", 8)]  # fmt: skip
    r = doc["gateways"][GW]
    assert (r["tampered"], r["gap"], r["duplicate"], r["reordered"]) == (1, 2, 1, 1)
    code, text, _ = verify(capsys, str(cap), "--keys", str(kf))
    assert code == 1
    for kind in ("tampered", "gap", "duplicate", "reordered"):
        assert any(line.split()[0] == kind for line in text.splitlines() if line.startswith("  "))
    assert text.splitlines()[-1] == "FAILED: gap, tampered"


def test_unknown_key_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clean: list[Message]
) -> None:
    """Batches signed by a key the keys file does not trust: unknown_key, exit 1."""
    cap = tmp_path / "cap.jsonl"
    write_capture(cap, clean[:3])
    other = SoftwareKey.generate(ED25519)
    kf = keys_file(tmp_path / "keys", f"{GW} {other.public.to_text()}")
    code, out, _ = verify(capsys, str(cap), "--keys", str(kf))
    assert code == 1
    row = next(line.split() for line in out.splitlines() if line.startswith(GW))
    assert row[-1] == "3" and "FAILED: unknown_key" in out


def test_rotation_line_in_keys_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A chain that rotates to a hybrid key verifies with the old key and a rotation line."""
    import base64

    old, new = SoftwareKey.generate(ED25519), SoftwareKey.generate(HYBRID)
    first, state = capture(old, 3)
    second, _ = capture(new, 3, state=ChainState(state.epoch, state.seq, state.last_hash), first=4)
    cap = tmp_path / "cap.jsonl"
    write_capture(cap, first + second)
    stmt = base64.b64encode(rotation(old, new)).decode()
    kf = keys_file(tmp_path / "keys", f"{GW} {old.public.to_text()}", f"rotation {stmt}")
    code, out, _ = verify(capsys, str(cap), "--keys", str(kf), "--json")
    assert code == 0, out
    assert json.loads(out)["gateways"][GW]["verified"] == 6


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (["gw-1 ed25519"], "keys:3: a key line is '<gateway id> <algorithm> <base64 key>'"),
        (["gw-1 rsa AAAA"], "keys:3: algorithm must be one of ed25519, ed25519+mldsa65"),
        (["rotation !!"], "keys:3: not a rotation statement"),
        ([], "no key lines"),
    ],
)
def test_bad_keys_file_exit_78(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lines: list[str], says: str
) -> None:
    """A bad keys file: exit 78 and file:line saying what a line must look like."""
    cap = tmp_path / "cap.jsonl"
    cap.write_text("")
    code, _, err = verify(capsys, str(cap), "--keys", str(keys_file(tmp_path / "keys", *lines)))
    assert code == 78 and says in err, err


def test_bad_capture_line_and_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A capture line that is not the format: exit 1 naming file:line; no input at all: exit 2."""
    key = SoftwareKey.generate(ED25519)
    kf = keys_file(tmp_path / "keys", f"{GW} {key.public.to_text()}")
    cap = tmp_path / "cap.jsonl"
    cap.write_text('{"topic": "a/b/c/telemetry", "payload": "AAAA"}\nnot json\n')
    code, _, err = verify(capsys, str(cap), "--keys", str(kf))
    assert code == 1 and f"{cap}:2:" in err
    code, _, err = verify(capsys, "--keys", str(kf))
    assert code == 2 and "give a capture file" in err
    code, _, err = verify(capsys, "--live", "--keys", str(kf))
    assert code == 2 and "--live needs --broker HOST" in err


def test_live_topics_share_the_batches_not_the_keys() -> None:
    """With a share group the batch topics are $share/..., the keys topic is not shared."""
    assert live_topics("cityedge", "hub") == [
        "$share/hub/cityedge/+/+/telemetry",
        "$share/hub/cityedge/+/+/alerts",
        "$share/hub/cityedge/+/+/events",
        "cityedge/+/+/keys",
    ]


# -- against a real broker ----------------------------------------------------------


def publish(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait for each acknowledgement."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload, retain in messages:
            c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        c.disconnect()
        stop_loop(c)


def start_cli(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cityedge", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_subscribed(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the command says so once its subscription is granted
    assert "subscribed to" in line, line + proc.stderr.read()


def test_capture_then_verify(broker: Broker, tmp_path: Path, key: SoftwareKey) -> None:
    """capture --count 6 records sealed batches from Mosquitto; verify on the file: clean."""
    out = tmp_path / "cap.jsonl"
    proc = start_cli("capture", "--broker", "127.0.0.1", "--port", str(broker.port),
                     "--out", str(out), "--count", "6", "--seconds", "20")  # fmt: skip
    try:
        wait_subscribed(proc)
        msgs, _ = capture(key, 5)
        publish(broker.port, [(TOPIC.replace("telemetry", "state"), b"online", False)]
                + [(m.topic, m.payload, False) for m in msgs])  # fmt: skip
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"6 message(s) written to {out}" in err
    got = list(read_capture(out))
    assert [m.payload for m in got[1:]] == [m.payload for m in msgs]
    kf = keys_file(tmp_path / "keys", f"{GW} {key.public.to_text()}")
    assert main(["verify", str(out), "--keys", str(kf)]) == 0


def test_live_verify_in_a_share_group_with_a_retained_rotation(
    broker: Broker, tmp_path: Path
) -> None:
    """Live in a share group: a retained rotation on .../keys lets the new key's batches verify."""
    old, new = SoftwareKey.generate(ED25519), SoftwareKey.generate(ED25519)
    keys_topic = TOPIC.replace("telemetry", "keys")
    publish(broker.port, [(keys_topic, rotation(old, new), True)])
    kf = keys_file(tmp_path / "keys", f"{GW} {old.public.to_text()}")
    proc = start_cli("verify", "--live", "--broker", "127.0.0.1", "--port", str(broker.port),
                     "--share-group", "hub", "--keys", str(kf), "--seconds", "2.5",
                     "--json")  # fmt: skip
    try:
        wait_subscribed(proc)
        time.sleep(0.2)  # the retained statement is delivered right after the subscription
        msgs, _ = capture(new, 4)
        publish(broker.port, [(m.topic, m.payload, False) for m in msgs])
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    doc = json.loads(out)
    assert doc["share_group"] == "hub" and doc["findings"] == []
    assert doc["gateways"][GW]["verified"] == 4 and doc["gateways"][GW]["rotations"] == 1
