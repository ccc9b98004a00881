"""The uplink over TLS to a Mosquitto listener using a CA made by the test."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cityedge.config.model import TlsConfig, UplinkConfig
from cityedge.outbox import Outbox
from cityedge.readings import Reading
from cityedge.uplink.codec import reading_body
from cityedge.uplink.link import Link
from cityedge.uplink.sender import Sender
from tests.peers.mqtt import Broker, free_port
from tests.peers.pki import Pki, make_pki


def start_tls_broker(tmp: Path, pki: Pki) -> Broker:
    port = free_port()
    b = Broker(tmp, free_port())
    b.extra_conf = (
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n"
    )
    b.start()
    b.tls_port = port  # type: ignore[attr-defined]
    return b


async def try_connect(cfg: UplinkConfig) -> tuple[bool, str | None]:
    link = Link(cfg, "gw-test", "cityedge/t/gw-test/state", lambda mid, ok: None)
    ok = await link.open(timeout_s=5)
    err = link.error
    await link.close(graceful=ok)
    return ok, err


async def test_mutual_tls_delivers(tmp_path: Path) -> None:
    """With the right CA and a client certificate, batches are published and acked."""
    pki = make_pki(tmp_path / "pki")
    broker = start_tls_broker(tmp_path, pki)
    try:
        tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        cfg = UplinkConfig(
            broker="localhost",
            port=broker.tls_port,
            tls=tls,
            batch_max_age_s=0.05,  # type: ignore[attr-defined]
        )
        ex = ThreadPoolExecutor(1)
        ob = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30)
        ob.open()
        r = Reading("m", "p", 1.5, "V", datetime.now(UTC))
        ob.accept([(2, "m", reading_body(r))] * 10)
        sender = Sender(cfg, ob, ex, gateway_id="gw-test", site_id="t")
        task = asyncio.create_task(sender.run())
        for _ in range(200):
            if sender.stats.readings_acked >= 10:
                break
            await asyncio.sleep(0.05)
        await sender.stop()
        await task
        ob.close()
        ex.shutdown()
        assert sender.stats.readings_acked == 10
    finally:
        broker.stop()


async def test_wrong_server_certificate_is_refused(tmp_path: Path) -> None:
    """A server whose certificate is not from the configured CA is refused."""
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", "some other CA")
    broker = start_tls_broker(tmp_path, pki)
    try:
        tls = TlsConfig(ca_file=other.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        cfg = UplinkConfig(broker="localhost", port=broker.tls_port, tls=tls)  # type: ignore[attr-defined]
        ok, err = await try_connect(cfg)
        assert not ok
        assert err is not None and "CERTIFICATE_VERIFY_FAILED" in err
    finally:
        broker.stop()


async def test_no_client_certificate_is_refused(tmp_path: Path) -> None:
    """Without a client certificate, a listener that requires one refuses the gateway."""
    pki = make_pki(tmp_path / "pki")
    broker = start_tls_broker(tmp_path, pki)
    try:
        cfg = UplinkConfig(broker="localhost", port=broker.tls_port, tls=TlsConfig(ca_file=pki.ca))  # type: ignore[attr-defined]
        ok, _err = await try_connect(cfg)
        assert not ok
    finally:
        broker.stop()


async def test_rotated_certificates_are_used_without_a_restart(tmp_path: Path) -> None:
    """New CA, server and client certificates on disk are picked up at the next reconnect."""
    live = tmp_path / "live"
    old = make_pki(live, "old CA")
    (tmp_path / "b1").mkdir()
    broker = start_tls_broker(tmp_path / "b1", old)
    port = broker.tls_port  # type: ignore[attr-defined]
    tls = TlsConfig(ca_file=old.ca, cert_file=old.client_cert, key_file=old.client_key)
    cfg = UplinkConfig(broker="localhost", port=port, tls=tls, batch_max_age_s=0.05,
                       reconnect_min_s=0.1, reconnect_max_s=0.3)  # fmt: skip
    ex = ThreadPoolExecutor(1)
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30)
    ob.open()
    r = Reading("m", "p", 1.5, "V", datetime.now(UTC))
    sender = Sender(cfg, ob, ex, gateway_id="gw-test", site_id="t")
    task = asyncio.create_task(sender.run())
    try:
        ob.accept([(2, "m", reading_body(r))] * 5)
        for _ in range(200):
            if sender.stats.readings_acked >= 5:
                break
            await asyncio.sleep(0.05)
        assert sender.stats.readings_acked == 5
        # Rotation: a new CA; the broker restarts with a server certificate from it,
        # and new client files replace the old ones at the same paths.
        broker.stop()
        new = make_pki(tmp_path / "new", "new CA")
        for src, dst in ((new.ca, old.ca), (new.client_cert, old.client_cert),
                         (new.client_key, old.client_key)):  # fmt: skip
            dst.write_bytes(src.read_bytes())
        b2 = Broker(tmp_path / "b1", broker.port)
        b2.extra_conf = (
            f"listener {port} 127.0.0.1\n"
            f"cafile {new.ca}\ncertfile {new.server_cert}\nkeyfile {new.server_key}\n"
            "require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n"
        )
        b2.start()
        try:
            ob.accept([(2, "m", reading_body(r))] * 5)
            for _ in range(300):
                if sender.stats.readings_acked >= 10:
                    break
                await asyncio.sleep(0.05)
            assert sender.stats.readings_acked == 10, sender.stats
            assert sender.stats.reconnects >= 1
        finally:
            b2.stop()
    finally:
        await sender.stop()
        await task
        ob.close()
        ex.shutdown()


def test_stop_loop_closes_pahos_wake_up_socket_pair() -> None:
    """paho's loop_start opens a loopback socket pair that loop_stop leaves open."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cityedge.uplink.link import stop_loop

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.loop_start()
    pair = (client._sockpairR, client._sockpairW)
    assert all(s is not None and s.fileno() >= 0 for s in pair)
    stop_loop(client)
    assert all(s is not None and s.fileno() == -1 for s in pair)  # closed, not left to the GC
