"""OPC UA security against a real asyncua server: Basic256Sha256, trust lists, users, discovery."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from cityedge.drivers.opcua.certs import load_cert_der, thumbprint
from cityedge.drivers.opcua.client import Settings
from cityedge.drivers.opcua.discover import browse, list_endpoints
from cityedge.drivers.opcua.source import OpcUaSource
from tests.peers.modbus import async_test, free_port
from tests.peers.opcua import (
    OpcUaPeer,
    make_server_cert,
    opcua_bus,
    pump_device,
    running,
    serving,
    values,
    wait_until,
)

USERS = {"tech": "s3cret"}


def secure_options(tmp: Path, server_cert: Path, mode: str) -> dict[str, Any]:
    return {
        "security_policy": "Basic256Sha256",
        "security_mode": mode,
        "certificate_dir": str(tmp / "gw"),
        "trust": [str(server_cert)],
        "username": "tech",
        "password": USERS["tech"],
    }


def secure_source(url: str, tmp: Path, options: dict[str, Any]) -> OpcUaSource:
    bus = opcua_bus(url, **options)
    settings = Settings.from_options(url, bus.options, state_dir=tmp, timeout_s=2.0)
    return OpcUaSource(bus, [(pump_device(), "cell-1")], settings,
                       reopen_min_s=0.2, reopen_max_s=0.5)  # fmt: skip


@async_test
async def test_sign_and_encrypt_with_trusted_certificates_and_user(tmp_path: Path) -> None:
    """Basic256Sha256 SignAndEncrypt with the generated client cert trusted: values flow, browse."""
    server = make_server_cert(tmp_path / "srv")
    peer = OpcUaPeer(free_port(), cert=server, users=USERS)
    options = secure_options(tmp_path, server.cert, "SignAndEncrypt")
    source = secure_source(peer.url, tmp_path, options)
    identity = source.settings.identity()  # what the source makes on first run
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    peer.trusted_clients.add(identity.cert_der)
    async with serving(peer):
        async with running(source) as col:
            await peer.set("Speed", 12.5)
            await wait_until(lambda: 12.5 in values(col, "speed"))
            status = source.status()
        nodes = await browse(peer.url, "ns=2;s=Pump1", depth=1, state_dir=tmp_path, **options)
    assert status["security"] == "Basic256Sha256/SignAndEncrypt"
    assert peer.client_certs_seen and set(peer.client_certs_seen) == {identity.cert_der}
    speed = next(n for n in nodes if n["node_id"] == "ns=2;s=Pump1.Speed")
    assert speed["browse_path"] == "0:Objects/2:Pump1/2:Speed"
    assert (speed["data_type"], speed["value"]) == ("Double", 12.5)


@async_test
async def test_sign_connects_once_the_server_trusts_the_gateway(tmp_path: Path) -> None:
    """Basic256Sha256 Sign: refused until the server trusts the gateway's cert, then it connects."""
    server = make_server_cert(tmp_path / "srv")
    peer = OpcUaPeer(free_port(), cert=server, users=USERS)
    source = secure_source(peer.url, tmp_path, secure_options(tmp_path, server.cert, "Sign"))
    async with serving(peer), running(source) as col:
        await wait_until(lambda: source.counters["transport_errors"] >= 2)
        assert not source.connected
        made = load_cert_der(tmp_path / "gw" / "cityedge-cert.der")  # made on first run
        peer.trusted_clients.add(made)
        await wait_until(lambda: 0.0 in values(col, "speed"), within_s=8)
        status = source.status()
    assert status["security"] == "Basic256Sha256/Sign"


@async_test
async def test_untrusted_server_certificate_is_refused(tmp_path: Path) -> None:
    """A server whose certificate is not in trust is refused and counted, never used."""
    server = make_server_cert(tmp_path / "srv")
    other = make_server_cert(tmp_path / "other", "other")
    peer = OpcUaPeer(free_port(), cert=server, users=USERS)
    source = secure_source(peer.url, tmp_path,
                           secure_options(tmp_path, other.cert, "SignAndEncrypt"))  # fmt: skip
    peer.trusted_clients.add(source.settings.identity().cert_der)
    async with serving(peer), running(source) as col:
        await wait_until(lambda: source.rejected["untrusted_server"] >= 2)
        status = source.status()
    assert status["connected"] is False
    assert peer.client_certs_seen == []  # no session was ever attempted
    assert {r.reason for r in col.readings} == {"unreachable"}
    devices: Any = status["devices"]
    assert thumbprint(load_cert_der(server.cert)) in devices["pump1"]["last_error"]


@async_test
async def test_a_bus_without_the_servers_policy_is_a_security_mismatch(tmp_path: Path) -> None:
    """security_policy None against a Basic256Sha256-only server: counted as a mismatch, named."""
    server = make_server_cert(tmp_path / "srv")
    peer = OpcUaPeer(free_port(), cert=server)
    source = secure_source(peer.url, tmp_path, {})
    async with serving(peer), running(source):
        await wait_until(lambda: source.rejected["security_mismatch"] >= 2)
        status = source.status()
    assert status["connected"] is False
    devices: Any = status["devices"]
    error = devices["pump1"]["last_error"]
    assert "is up but offers no None/None endpoint" in error
    assert "Basic256Sha256/SignAndEncrypt" in error


@async_test
async def test_list_endpoints_shows_policies_thumbprint_and_tokens(tmp_path: Path) -> None:
    """list_endpoints gives each endpoint's policy, mode, server thumbprint and token types."""
    server = make_server_cert(tmp_path / "srv")
    async with serving(OpcUaPeer(free_port(), cert=server, users=USERS)) as peer:
        endpoints = await list_endpoints(peer.url)
    modes = sorted((e["security_policy"], e["security_mode"]) for e in endpoints)
    assert modes == [("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt")]
    want = thumbprint(load_cert_der(server.cert))
    assert {e["server_certificate_thumbprint"] for e in endpoints} == {want}
    assert all(e["user_token_types"] == ["UserName"] for e in endpoints)


@async_test
async def test_browse_lists_node_ids_paths_types_and_values(tmp_path: Path) -> None:
    """browse from Objects, depth 2, lists the pump's variables with paths, types and values."""
    async with serving(OpcUaPeer(free_port())) as peer:
        nodes = await browse(peer.url, state_dir=tmp_path)
    by_id = {n["node_id"]: n for n in nodes}
    pump = by_id["ns=2;s=Pump1"]
    assert (pump["browse_path"], pump["node_class"], pump["depth"]) == (
        "0:Objects/2:Pump1",
        "Object",
        1,
    )
    pressure = by_id["ns=2;s=Pump1.Pressure"]
    assert pressure["browse_path"] == "0:Objects/2:Pump1/2:Pressure"
    assert (pressure["data_type"], pressure["value"]) == ("Float", 1.5)
    assert by_id["ns=2;i=1001"]["browse_path"] == "0:Objects/2:Counter"
    assert by_id["ns=2;s=Pump1.Sensor"]["status"] == "BadSensorFailure"
    assert max(n["depth"] for n in nodes) == 2
