"""The broker link: one paho client per connection, supervised from asyncio.

paho runs its network loop in its own thread; its callbacks only hand events
to the event loop (``call_soon_threadsafe``). A fresh client is made for every
connection so that nothing paho buffered for a dead connection is re-sent
behind our back: after a reconnect the sender re-publishes its unacknowledged
batches itself, from the outbox, with the same batch ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityedge import __version__
from cityedge.config.model import UplinkConfig
from cityedge.readings import format_ts, utc_now

log = structlog.get_logger("cityedge.uplink")


def tls_context(cfg: UplinkConfig) -> ssl.SSLContext | None:
    """A TLS 1.2+ client context with server verification on, or None.

    Built anew for every connection, so certificates and keys rotated on disk
    are picked up on the next reconnect without a restart.
    """
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls.cert_file:
        ctx.load_cert_chain(
            str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None
        )
    if cfg.tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def state_payload(state: str, **extra: Any) -> bytes:
    doc = {"v": 1, "state": state, "ts": format_ts(utc_now()), "version": __version__, **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


class Link:
    """One connection to the broker. Make a new one to reconnect."""

    def __init__(
        self,
        cfg: UplinkConfig,
        client_id: str,
        state_topic: str,
        on_ack: Callable[[int, bool], None],
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.state_topic = state_topic
        self._loop = asyncio.get_running_loop()
        self._on_ack = on_ack
        self._on_message = on_message
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()
        self.error: str | None = None
        v5 = cfg.protocol == "mqtt5"
        self._v5 = v5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        self.client.max_inflight_messages_set(max(cfg.max_inflight_batches, 1) + 4)
        self.client.max_queued_messages_set(0)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        self._tls_sockets: list[ssl.SSLSocket] = []
        ctx = tls_context(cfg)
        if ctx is not None:
            _track_sockets(ctx, self._tls_sockets)
            self.client.tls_set_context(ctx)
        self.client.will_set(
            state_topic, state_payload("offline", reason="connection_lost"), qos=1, retain=True
        )
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_publish = self._cb_publish
        self.client.on_connect_fail = self._cb_connect_fail
        self.client.on_message = self._cb_message

    # paho thread -> event loop ----------------------------------------------

    def _cb_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        ok = not getattr(rc, "is_failure", False) and rc == 0
        self._loop.call_soon_threadsafe(self._connected, ok, str(rc))

    def _cb_connect_fail(self, client: Any, userdata: Any) -> None:
        self._loop.call_soon_threadsafe(self._set_lost, "connect_failed")

    def _cb_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._loop.call_soon_threadsafe(self._set_lost, str(rc))

    def _cb_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        ok = not getattr(rc, "is_failure", False)
        self._loop.call_soon_threadsafe(self._on_ack, mid, ok)

    def _cb_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._loop.call_soon_threadsafe(self._on_message, msg.topic, bytes(msg.payload))

    def _connected(self, ok: bool, reason: str) -> None:
        if ok:
            self.connected.set()
        else:
            self._set_lost(f"refused: {reason}")

    def mark_lost(self, reason: str) -> None:
        """End this connection (the sender's word: the broker refused a batch)."""
        self._set_lost(reason)

    def _set_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.error = reason
            self.lost.set()

    # event loop side ----------------------------------------------------------

    async def open(self, timeout_s: float = 10.0) -> bool:
        """Connect; True once the broker accepted us, False otherwise."""
        try:
            await asyncio.to_thread(
                self.client.connect, self.cfg.broker, self.cfg.port, self.cfg.keepalive_s
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            # paho leaves the socket of a failed TLS handshake open: close it.
            for sock in self._tls_sockets:
                sock.close()
            return False
        self.client.loop_start()
        waiter = asyncio.ensure_future(self.connected.wait())
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({waiter, lost}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            lost.cancel()
        if not self.connected.is_set():
            self.error = self.error or "connect_timeout"
            await self.close(graceful=False)
            return False
        self.client.publish(self.state_topic, state_payload("online"), qos=1, retain=True)
        return True

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def publish(
        self,
        topic: str,
        payload: bytes,
        batch_id: str | None = None,
        *,
        signed: bool = False,
        retain: bool = False,
    ) -> int:
        """Publish at QoS 1 and return the message id the ack will carry."""
        props = None
        if self._v5 and batch_id is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            schema = "cityedge.batch/2" if signed else "cityedge.batch/1"
            user = [("encoding", "deflate"), ("schema", schema)]
            if batch_id:
                user.append(("batch", batch_id))
            props.ContentType = "application/json"
            setattr(props, "UserProperty", user)  # noqa: B010 - paho sets it dynamically
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._set_lost(f"publish_failed: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    async def close(self, graceful: bool) -> None:
        """Disconnect; a graceful close first retains the offline state."""
        if graceful and self.connected.is_set() and not self.lost.is_set():
            info = self.client.publish(
                self.state_topic, state_payload("offline", reason="shutdown"), qos=1, retain=True
            )
            await asyncio.to_thread(_wait_published, info, 2.0)
            self.client.disconnect()
        await asyncio.to_thread(stop_loop, self.client)
        if not graceful:
            # Drop the socket without DISCONNECT so the broker sends the will.
            sock = self.client.socket()
            if sock is not None:
                sock.close()


def stop_loop(client: mqtt.Client) -> None:
    """``loop_stop``, then close paho's wake-up socket pair.

    paho (2.2) opens a loopback TCP socket pair for each ``loop_start`` and
    closes it only when the client is garbage-collected: two file
    descriptors per connection linger until the collector runs, and a test
    sees them as unclosed sockets.
    """
    client.loop_stop()
    with contextlib.suppress(Exception):
        client._reset_sockets(sockpair_only=True)


def _wait_published(info: mqtt.MQTTMessageInfo, timeout_s: float) -> None:
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout_s)


def _track_sockets(ctx: ssl.SSLContext, into: list[ssl.SSLSocket]) -> None:
    """Make ``ctx`` record the TLS sockets it wraps, so a failed connect can close them."""
    base = ctx.sslsocket_class

    class Tracked(base):  # type: ignore[valid-type,misc]
        @classmethod
        def _create(cls, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
            sock: ssl.SSLSocket = super()._create(*args, **kwargs)
            into.append(sock)
            return sock

    ctx.sslsocket_class = Tracked
