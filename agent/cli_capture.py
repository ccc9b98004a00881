"""``cityedge capture``: record uplink messages from a broker into a capture file.

The file is JSON Lines, one message a line, ``{"topic": ..., "payload":
<base64>}`` (:func:`cityedge.signing.verify.capture_line`), the input of
``cityedge verify``. Each line is flushed as it is written, so a capture
stopped by Ctrl-C or a pulled cable keeps everything it received.

:class:`Subscriber` is the MQTT 5 subscription ``capture`` and ``verify
--live`` share: paho's network thread only hands each message to a bounded
queue (10,000 messages; on overflow the message is dropped and counted, and
the command says so, since a verifier would then see gaps of its own making).
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cityedge.cli_util import UsageError, read_secret, say
from cityedge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from cityedge.uplink.link import stop_loop

QUEUE_MAX = 10_000


class SubscribeError(Exception):
    """The broker could not be reached, refused us, or refused a subscription."""


@dataclass
class MqttOptions:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MqttOptions:
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port must be 1..65535 (got {args.port})")
        if (args.cert_file is None) != (args.key_file is None):
            raise UsageError("--cert-file and --key-file go together (the client certificate)")
        for flag, path in (
            ("--ca-file", args.ca_file),
            ("--cert-file", args.cert_file),
            ("--key-file", args.key_file),
        ):
            if path is not None and not path.is_file():
                raise UsageError(f"{flag} {path}: no such file")
        if args.password_file and not args.username:
            raise UsageError("--password-file goes with --username")
        password = (
            read_secret(args.password_file, "--password-file") if args.password_file else None
        )
        tls = bool(args.tls or args.ca_file or args.cert_file)
        return cls(
            args.broker,
            args.port,
            args.username,
            password,
            args.ca_file,
            args.cert_file,
            args.key_file,
            tls,
        )


def add_mqtt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="the broker's host name or address")
    p.add_argument("--port", type=int, default=1883, help="default 1883 (8883 is usual with TLS)")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path, help="file with the password on its first line")
    p.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    p.add_argument("--ca-file", type=Path, help="CA certificate(s) of the broker (implies TLS)")
    p.add_argument("--cert-file", type=Path, help="client certificate (implies TLS)")
    p.add_argument("--key-file", type=Path, help="client certificate's key")


class Subscriber:
    """An MQTT 5 subscription whose messages wait in a bounded queue."""

    def __init__(self, opts: MqttOptions, topics: list[str], queue_max: int = QUEUE_MAX) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.opts = opts
        self.topics = topics
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue(queue_max)
        self.dropped = 0
        self.connects = 0
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c = self._client
        if opts.username:
            c.username_pw_set(opts.username, opts.password)
        if opts.tls:
            ctx = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
            if opts.cert_file:
                ctx.load_cert_chain(
                    str(opts.cert_file), str(opts.key_file) if opts.key_file else None
                )
            c.tls_set_context(ctx)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._failure = f"the broker refused the connection: {reason}"
            self._subscribed.set()
            return
        self.connects += 1
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        refused = [f"{t} ({r})" for t, r in zip(self.topics, reasons, strict=False) if r.is_failure]
        if refused:
            self._failure = f"the broker refused the subscription to {', '.join(refused)}"
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            self.queue.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.dropped += 1

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; SubscribeError saying why not."""
        where = f"{self.opts.host}:{self.opts.port}"
        try:
            self._client.connect(self.opts.host, self.opts.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise SubscribeError(f"cannot connect to {where}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise SubscribeError(f"no answer from the broker at {where} in {timeout_s:g} s")
        if self._failure:
            self.stop()
            raise SubscribeError(self._failure)

    def get(self, timeout_s: float) -> tuple[str, bytes] | None:
        try:
            return self.queue.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        stop_loop(self._client)


def add_parser(sub: Any) -> None:
    c = sub.add_parser("capture", help="record messages from a broker into a capture file")
    add_mqtt_args(c)
    c.add_argument(
        "--topic", action="append", default=[], help="topic filter (repeat; default cityedge/#)"
    )
    c.add_argument("--out", type=Path, help="the capture file (JSON Lines) to write")
    c.add_argument("--append", action="store_true", help="add to the file instead of replacing it")
    c.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    c.add_argument("--count", type=int, help="stop after this many messages")


def run(args: argparse.Namespace) -> int:
    try:
        opts = _check(args)
    except UsageError as exc:
        say("capture", str(exc))
        return EXIT_USAGE
    topics = args.topic or ["cityedge/#"]
    sub = Subscriber(opts, topics)
    try:
        out = args.out.open("a" if args.append else "w")
    except OSError as exc:
        say("capture", f"cannot write {args.out}: {exc.strerror}")
        return EXIT_FAILURE
    with out:
        try:
            sub.start()
        except SubscribeError as exc:
            say("capture", str(exc))
            return EXIT_FAILURE
        say(
            "capture",
            f"subscribed to {', '.join(topics)} on {opts.host}:{opts.port}; "
            f"writing {args.out} (Ctrl-C stops)",
        )
        try:
            n = _record(sub, out, args.seconds, args.count)
        finally:
            sub.stop()
    say(
        "capture",
        f"{n} message(s) written to {args.out}"
        + (f"; {sub.dropped} dropped (could not keep up)" if sub.dropped else ""),
    )
    return EXIT_OK


def _check(args: argparse.Namespace) -> MqttOptions:
    if not args.broker:
        raise UsageError("--broker HOST is needed (the broker to subscribe to)")
    if args.out is None:
        raise UsageError("--out FILE is needed (where the capture goes)")
    if args.seconds is not None and args.seconds <= 0:
        raise UsageError(f"--seconds must be above 0 (got {args.seconds})")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be 1 or more (got {args.count})")
    return MqttOptions.from_args(args)


def _record(sub: Subscriber, out: IO[str], seconds: float | None, count: int | None) -> int:
    from cityedge.signing.verify import capture_line

    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    try:
        while count is None or n < count:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if deadline is not None and left <= 0:
                break
            msg = sub.get(left)
            if msg is not None:
                out.write(capture_line(*msg))
                out.flush()
                n += 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return n
