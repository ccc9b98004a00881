"""``cityedge verify``: check signed batches from a capture file or a live subscription.

    cityedge verify CAPTURE.jsonl --keys KEYSFILE [--expect-start] [--json]
    cityedge verify --live --broker H [--port P] [--prefix cityedge]
                    [--share-group NAME] [--tls | --ca-file F --cert-file F --key-file F]
                    --keys KEYSFILE [--seconds N]

Uses :class:`cityedge.signing.verify.Verifier` and prints, per gateway:
verified, gap, duplicate, reordered, tampered, unknown key (and malformed,
declared drops, epochs, rotations), then the findings. Exit 1 when anything
is tampered, malformed, a gap or signed by an unknown key; 0 otherwise;
2 for a wrong option; 78 for a bad keys file.

Only batch topics (``.../telemetry``, ``.../alerts``, ``.../events``) and key
topics (``.../keys``: the gateway's keys message, whose rotation statements
are taken) are checked; other messages of a
capture (``.../state``, commands) are skipped and counted.

The keys file
-------------

Plain text, one entry a line; blank lines and lines starting with ``#`` are
ignored::

    # <gateway id> <algorithm> <base64 public key>   (as `cityedge keys show` prints it)
    gw-0001 ed25519 kO5yb3...=
    gw-0002 ed25519+mldsa65 AbC...=
    # rotation <base64 rotation statement>            (as `cityedge keys rotate` prints it)
    rotation Q0VSUwEBAQ...

A gateway may have several key lines (old keys stay trusted). A rotation
statement makes its new key trusted wherever its old key is.

Live mode subscribes with MQTT 5 (QoS 1) to ``<prefix>/+/+/telemetry``,
``.../alerts`` and ``.../events``; with ``--share-group NAME`` as the shared
subscriptions ``$share/NAME/<prefix>/+/+/<kind>``, so several verifiers split
the load. ``<prefix>/+/+/keys`` is always subscribed unshared (every member
needs every rotation; brokers do not send retained messages to shared
subscriptions). A member of a share group sees only part of each chain, so
its gaps and reorderings are other members' batches: they are listed but do
not fail the run; signatures and every link between batches it saw are
checked as usual. The report is printed at ``--seconds`` or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityedge.cli_capture import MqttOptions, SubscribeError, Subscriber, add_mqtt_args
from cityedge.cli_util import UsageError, add_json, print_json, say
from cityedge.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE

BATCH_KINDS = ("telemetry", "alerts", "events")
FAILING = ("tampered", "gap", "unknown_key", "malformed")
SHARED_INFO = ("gap", "reordered")  # not failures for one member of a share group
MAX_FINDINGS_SHOWN = 50
COLUMNS = ("verified", "gap", "duplicate", "reordered", "tampered", "unknown_key")


class KeysFileError(ValueError):
    """A keys file line that is not a key or rotation line (message names file:line)."""


@dataclass
class TrustedKeys:
    keys: dict[str, list[str]] = field(default_factory=dict)
    rotations: list[bytes] = field(default_factory=list)


def load_keys_file(path: Path) -> TrustedKeys:
    """Parse a keys file; KeysFileError naming file, line and what is allowed."""
    from cityedge.signing.algorithms import PublicKey
    from cityedge.signing.envelope import EnvelopeError, open_rotation

    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: {exc.strerror}") from exc
    out = TrustedKeys()
    for n, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{n}"
        if words[0] == "rotation":
            if len(words) != 2:
                raise KeysFileError(f"{where}: a rotation line is 'rotation <base64>'")
            try:
                raw = base64.b64decode(words[1], validate=True)
                open_rotation(raw)
            except (binascii.Error, EnvelopeError) as exc:
                raise KeysFileError(f"{where}: not a rotation statement: {exc}") from exc
            out.rotations.append(raw)
            continue
        if len(words) != 3:
            raise KeysFileError(
                f"{where}: a key line is '<gateway id> <algorithm> <base64 key>' "
                f"or 'rotation <base64>' (got {len(words)} words)"
            )
        try:
            PublicKey.from_text(" ".join(words[1:]))
        except ValueError as exc:
            raise KeysFileError(f"{where}: {exc}") from exc
        out.keys.setdefault(words[0], []).append(" ".join(words[1:]))
    if not out.keys:
        raise KeysFileError(f"{path}: no key lines; each is '<gateway id> <algorithm> <base64>'")
    return out


def add_parser(sub: Any) -> None:
    v = sub.add_parser(
        "verify",
        help="check signatures and chains of a capture file or a live subscription",
        description="Reports per gateway: verified, gap, duplicate, reordered, tampered, "
        "unknown key. The keys file format is in `pydoc cityedge.cli_verify`.",
    )
    v.add_argument(
        "capture",
        metavar="CAPTURE.jsonl",
        nargs="?",
        type=Path,
        help="a capture file (cityedge capture); leave out with --live",
    )
    v.add_argument(
        "--keys",
        type=Path,
        required=True,
        help="keys file: '<gateway> <algorithm> <base64>' and 'rotation <base64>' lines",
    )
    v.add_argument(
        "--expect-start",
        action="store_true",
        help="the capture starts at the first batch: seqs missing from 1 are gaps",
    )
    v.add_argument(
        "--all-findings",
        action="store_true",
        help=f"list every finding (default: the first {MAX_FINDINGS_SHOWN})",
    )
    v.add_argument("--live", action="store_true", help="subscribe to a broker instead")
    add_mqtt_args(v)
    v.add_argument("--prefix", default="cityedge", help="uplink topic prefix (default cityedge)")
    v.add_argument("--share-group", help="MQTT 5 shared subscription group name")
    v.add_argument("--seconds", type=float, help="live: stop after this long (default: Ctrl-C)")
    add_json(v)


def _topic_kind(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


@dataclass
class Run:
    """A verifier and what it saw."""

    verifier: Any
    findings: list[Any] = field(default_factory=list)
    messages: int = 0
    skipped: int = 0

    def feed(self, topic: str, payload: bytes) -> None:
        kind = _topic_kind(topic)
        if kind == "keys":
            self.messages += 1
            for stmt in _rotation_payloads(payload):
                self.findings.extend(self.verifier.add_rotation(stmt, topic))
        elif kind in BATCH_KINDS:
            self.messages += 1
            self.findings.extend(self.verifier.feed(topic, payload))
        else:
            self.skipped += 1

    def feed_all(self, messages: Iterable[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            self.feed(topic, payload)


def _rotation_payloads(payload: bytes) -> list[bytes]:
    """A keys-topic payload: one raw statement, or JSON with ``rotations`` (base64)."""
    if payload[:4] == b"CERS":
        return [payload]
    try:
        doc = json.loads(payload)
        return [base64.b64decode(r, validate=True) for r in doc.get("rotations", [])]
    except (ValueError, TypeError, AttributeError, binascii.Error):
        return [payload]  # the verifier reports it as malformed


def run(args: argparse.Namespace) -> int:
    from cityedge.signing.verify import Verifier

    try:
        _check(args)
        opts = MqttOptions.from_args(args) if args.live else None
    except UsageError as exc:
        say("verify", str(exc))
        return EXIT_USAGE
    try:
        trusted = load_keys_file(args.keys)
    except KeysFileError as exc:
        say("verify", str(exc))
        return EXIT_CONFIG
    verifier = Verifier(trusted.keys, trusted.rotations, expect_start=args.expect_start)
    state = Run(verifier)
    if opts is not None:
        code = _live(args, opts, state)
        if code is not None:
            return code
    else:
        code = _offline(args.capture, state)
        if code is not None:
            return code
    state.findings.extend(verifier.finish())
    return _report(args, state, shared=bool(args.live and args.share_group))


def _check(args: argparse.Namespace) -> None:
    if args.live and args.capture is not None:
        raise UsageError("give either a capture file or --live, not both")
    if not args.live and args.capture is None:
        raise UsageError("give a capture file (cityedge capture writes one) or --live --broker H")
    if args.live and not args.broker:
        raise UsageError("--live needs --broker HOST")
    if not args.live and (args.broker or args.share_group or args.seconds):
        raise UsageError("--broker, --share-group and --seconds go with --live")
    if args.seconds is not None and args.seconds <= 0:
        raise UsageError(f"--seconds must be above 0 (got {args.seconds})")
    if args.share_group is not None and (
        not args.share_group or any(c in args.share_group for c in "/+#")
    ):
        raise UsageError(f"--share-group is a name without / + # (got {args.share_group!r})")


def _offline(capture: Path, state: Run) -> int | None:
    from cityedge.signing.verify import CaptureError, read_capture

    try:
        state.feed_all((m.topic, m.payload) for m in read_capture(capture))
    except CaptureError as exc:
        say("verify", f'{exc} (each line must be {{"topic": ..., "payload": <base64>}})')
        return EXIT_FAILURE
    except OSError as exc:
        say("verify", f"{capture}: {exc.strerror}")
        return EXIT_USAGE
    return None


def live_topics(prefix: str, share_group: str | None) -> list[str]:
    share = f"$share/{share_group}/" if share_group else ""
    return [f"{share}{prefix}/+/+/{k}" for k in BATCH_KINDS] + [f"{prefix}/+/+/keys"]


def _live(args: argparse.Namespace, opts: MqttOptions, state: Run) -> int | None:
    topics = live_topics(args.prefix, args.share_group)
    sub = Subscriber(opts, topics)
    try:
        sub.start()
    except SubscribeError as exc:
        say("verify", str(exc))
        return EXIT_FAILURE
    say(
        "verify",
        f"subscribed to {', '.join(topics)} on {opts.host}:{opts.port}; "
        + (f"report after {args.seconds:g} s" if args.seconds else "Ctrl-C for the report"),
    )
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            msg = sub.get(left)
            if msg is not None:
                state.feed(*msg)
    except KeyboardInterrupt:
        say("verify", "stopped; the report so far:")
    finally:
        sub.stop()
    if sub.dropped:
        say(
            "verify",
            f"{sub.dropped} message(s) dropped here (could not keep up): "
            "gaps may be of this verifier's making",
        )
    if sub.connects > 1:
        say(
            "verify",
            f"reconnected {sub.connects - 1} time(s): messages sent meanwhile show as gaps",
        )
    return None


def _report(args: argparse.Namespace, state: Run, *, shared: bool) -> int:
    reports = {gw: r.to_json() for gw, r in state.verifier.report().items()}
    failing = [
        f for f in state.findings if f.kind in FAILING and not (shared and f.kind in SHARED_INFO)
    ]
    if args.json:
        print_json(
            {
                "gateways": reports,
                "findings": [f.to_json() for f in state.findings],
                "messages": state.messages,
                "skipped": state.skipped,
                "passed": not failing,
                "share_group": args.share_group if args.live else None,
            }
        )
    else:
        print(render_report(reports, state, shared, args.all_findings))
    return EXIT_FAILURE if failing else EXIT_OK


def render_report(
    reports: dict[str, dict[str, int]], state: Run, shared: bool, all_findings: bool
) -> str:
    out = [f"{state.messages} message(s) checked, {state.skipped} on other topics skipped"]
    if not reports:
        out.append("no batches seen")
    width = max([len("gateway"), *map(len, reports)])
    out.append(f"{'gateway':<{width}}  " + "  ".join(f"{c:>11}" for c in COLUMNS))
    for gw, r in sorted(reports.items()):
        line = f"{gw:<{width}}  " + "  ".join(f"{r[c]:>11}" for c in COLUMNS)
        extras = [
            f"{k.replace('_', ' ')} {r[k]}"
            for k in ("malformed", "declared_drops", "rotations")
            if r.get(k)
        ]
        if r.get("epochs", 0) > 1:
            extras.append(f"epochs {r['epochs']}")
        out.append(line + ("  " + ", ".join(extras) if extras else ""))
    shown = state.findings if all_findings else state.findings[:MAX_FINDINGS_SHOWN]
    for f in shown:
        where = f"seq {f.seq}" if f.seq is not None else f.topic
        out.append(f"  {f.kind:<14} {f.gateway or '?'}  {where}  {f.detail}".rstrip())
    if len(shown) < len(state.findings):
        out.append(f"  ... {len(state.findings) - len(shown)} more (--all-findings)")
    if shared:
        out.append("share group: gaps and reorderings here are batches other members received")
    failing = {f.kind for f in state.findings if f.kind in FAILING}
    if shared:
        failing -= set(SHARED_INFO)
    out.append(
        "FAILED: " + ", ".join(sorted(failing))
        if failing
        else "OK: nothing tampered, missing or signed by an unknown key"
    )
    return "\n".join(out)
