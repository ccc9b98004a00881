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
