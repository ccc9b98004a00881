"""A real asyncua server on a free loopback port, with a small pump station.

The address space (namespace 2, ``urn:cityedge:test``), the same on every
start so a restarted server has the same node ids:

* ``Objects/2:Pump1`` (``ns=2;s=Pump1``) with variables ``2:Speed``
  (``ns=2;s=Pump1.Speed``, Double), ``2:Pressure`` (``ns=2;s=Pump1.Pressure``,
  Float), ``2:Running`` (Boolean), ``2:Setpoint`` (``ns=2;s=Pump1.Setpoint``,
  Double, writable), ``2:Sensor`` (``ns=2;s=Pump1.Sensor``, Double, status
  BadSensorFailure);
* ``ns=2;i=1001`` ``Objects/2:Counter`` (UInt32).

The test changes values with :meth:`OpcUaPeer.set`. With ``secure=True``
the server offers only Basic256Sha256 (Sign and SignAndEncrypt) with a
certificate made by the test, and accepts only client certificates the test
put in ``trusted_clients``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.opcua.certs import make_certificate
from cityedge.drivers.opcua.source import OpcUaSource
from cityedge.profiles import FieldMap, Profile, WriteRange
from cityedge.readings import Quality
from tests.peers.modbus import Collector

NS_URI = "urn:cityedge:test"
SERVER_URI = "urn:cityedge:test:server"


@dataclass
class ServerCert:
    cert: Path
    key: Path


def make_server_cert(folder: Path, name: str = "server") -> ServerCert:
    """A server application certificate and key, as an administrator would make."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = folder / f"{name}.der"
    cert.write_bytes(make_certificate(SERVER_URI, key, f"test {name}"))
    key_file = folder / f"{name}-key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ServerCert(cert, key_file)


class _Users:
    """Username/password check of the test server (anonymous allowed without users)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if not self.users:
            return User(role=UserRole.User)
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class OpcUaPeer:
    """One asyncua server; start/stop it as often as the test needs, same port."""

    port: int
    cert: ServerCert | None = None
    users: dict[str, str] = field(default_factory=dict)
    refuse_subscriptions: bool = False
    trusted_clients: set[bytes] = field(default_factory=set)
    server: Server | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    client_certs_seen: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        server = Server(user_manager=_Users(self.users))  # type: ignore[arg-type]
        await server.init()
        server.disable_clock()
        server.set_endpoint(self.url)
        server.set_server_name("cityedge test pump station")
        await server.set_application_uri(SERVER_URI)
        if self.cert is not None:
            await server.load_certificate(self.cert.cert.read_bytes(), format="der")
            await server.load_private_key(self.cert.key.read_bytes(), format="pem")
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                ]
            )
            server.set_certificate_validator(self._validate)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users else [
            ua.AnonymousIdentityToken, ua.UserNameIdentityToken]  # fmt: skip
        server.set_identity_tokens(tokens)
        if self.refuse_subscriptions:
            server.iserver.max_subscriptions = 0
        await self._populate(server)
        await server.start()
        self.server = server

    async def _validate(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        der = cert.public_bytes(serialization.Encoding.DER)
        self.client_certs_seen.append(der)
        if der not in self.trusted_clients:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    async def _populate(self, server: Server) -> None:
        ns = await server.register_namespace(NS_URI)
        objects = server.nodes.objects
        pump = await objects.add_object(ua.NodeId("Pump1", ns), ua.QualifiedName("Pump1", ns))
        specs: list[tuple[str, Any, ua.VariantType]] = [
            ("Speed", 0.0, ua.VariantType.Double),
            ("Pressure", 1.5, ua.VariantType.Float),
            ("Running", False, ua.VariantType.Boolean),
            ("Setpoint", 50.0, ua.VariantType.Double),
            ("Sensor", 0.0, ua.VariantType.Double),
        ]
        for name, value, vtype in specs:
            node = await pump.add_variable(
                ua.NodeId(f"Pump1.{name}", ns), ua.QualifiedName(name, ns), ua.Variant(value, vtype)
            )
            self.nodes[name] = node
        await self.nodes["Setpoint"].set_writable()
        self.nodes["Counter"] = await objects.add_variable(
            ua.NodeId(1001, ns),
            ua.QualifiedName("Counter", ns),
            ua.Variant(0, ua.VariantType.UInt32),
        )
        bad = ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(StatusCodes.BadSensorFailure),
        )
        await self.nodes["Sensor"].write_value(bad)

    async def set(self, name: str, value: Any, status: int = StatusCodes.Good) -> None:
        """Change a variable server-side, as the PLC program would."""
        node = self.nodes[name]
        vtype = await node.read_data_type_as_variant_type()
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=datetime.now(UTC),
        )
        await node.write_value(dv)

    async def get(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def stop(self) -> None:
        """Stop the server and the per-session tasks asyncua's server leaves running."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and _is_server_task(t)]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


def _is_server_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "/asyncua/server/" in code.co_filename


# -- config helpers ---------------------------------------------------------

PUMP_FIELDS = (
    FieldMap(key="ns=2;s=Pump1.Speed", name="speed", unit="1/min", family="water",
             options={"sampling_interval_ms": 20}),
    FieldMap(key="0:Objects/2:Pump1/2:Pressure", name="pressure", unit="bar", family="water",
             scale=0.1),
    FieldMap(key="ns=2;s=Pump1.Running", name="running", family="water"),
    FieldMap(key="ns=2;s=Pump1.Setpoint", name="setpoint", unit="1/min", family="water",
             write=WriteRange(0, 100), options={"data_type": "Double"}),
    FieldMap(key="ns=2;s=Pump1.Sensor", name="sensor", family="water"),
    FieldMap(key="ns=2;i=1001", name="counter", family="water"),
)  # fmt: skip


def pump_profile(fields: tuple[FieldMap, ...] = PUMP_FIELDS) -> Profile:
    return Profile(name="test/pump", vendor="test", model="pump", family="water",
                   protocol="opcua", fields=fields)  # fmt: skip


def opcua_bus(url: str, **options: Any) -> BusConfig:
    opts = {"endpoint": url, "publishing_interval_ms": 50, **options}
    return BusConfig(name="plc", type="opcua", timeout_s=2.0, options=opts)


def pump_device(profile: Profile | None = None, dev_id: str = "pump1", **kw: Any) -> DeviceConfig:
    prof = profile or pump_profile()
    return DeviceConfig(id=dev_id, bus="plc", profile_name=prof.name, profile=prof, **kw)


# -- test helpers -------------------------------------------------------------


async def wait_until(pred: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``pred`` every 20 ms; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def values(col: Collector, point: str, good: bool = True) -> list[Any]:
    return [r.value for r in col.readings
            if r.point == point and (r.quality is Quality.GOOD) == good]  # fmt: skip


@asynccontextmanager
async def running(source: OpcUaSource) -> AsyncIterator[Collector]:
    col = Collector()
    task = asyncio.create_task(source.run(col))
    try:
        yield col
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def serving(peer: OpcUaPeer) -> AsyncIterator[OpcUaPeer]:
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
