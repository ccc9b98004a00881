"""Opening and closing an asyncua client the way the bus config says.

:func:`open_client` builds a :class:`asyncua.Client` with the gateway's own
application certificate, checks the server's certificate against the trust
list before any secure channel is opened with it, sets the user, and
connects *without* asyncua's own auto-reconnect: the source owns
reconnection (backoff with full jitter, subscriptions rebuilt), as every
cityedge source does. asyncua's supervisor still watches the connection
(a ServerStatus read every ``watchdog_s``) and reports a loss through
``connection_lost_callback``.

Certificates are read here and handed to asyncua as bytes: asyncua would
read files through anyio worker threads, which outlive the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.crypto.uacrypto import CertProperties
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from cityedge.drivers.base import DecodeError
from cityedge.drivers.opcua.certs import (
    AppIdentity,
    UntrustedServer,
    check_trusted,
    default_application_uri,
    ensure_identity,
    load_identity,
    load_trust,
)
from cityedge.drivers.opcua.codec import parse_key, quality_of
from cityedge.errors import TransientError

POLICY_URIS = {
    "None": security_policies.SecurityPolicyNone.URI,
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256.URI,
}
MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
# What a broken or unreachable server raises while we talk to it.
TRANSPORT_ERRORS = (OSError, TimeoutError, ConnectionError, UaError, asyncio.IncompleteReadError)


class SecurityMismatch(Exception):
    """The server is up but offers no endpoint with the configured policy and mode.

    ``offered`` lists what it does offer (``Basic256Sha256/Sign``), empty if unknown.
    """

    def __init__(self, endpoint: str, wanted: str, offered: Sequence[str] = ()) -> None:
        self.endpoint, self.wanted, self.offered = endpoint, wanted, list(offered)
        listing = f"it offers {', '.join(self.offered)}" if self.offered else "it did not say what"
        super().__init__(f"server {endpoint} is up but offers no {wanted} endpoint ({listing})")


def offered_security(endpoints: Sequence[ua.EndpointDescription]) -> list[str]:
    """The policy/mode pairs of ``endpoints``: ``["Basic256Sha256/Sign", ...]``."""
    return sorted(
        {
            f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/"
            f"{'None' if e.SecurityMode == ua.MessageSecurityMode.None_ else e.SecurityMode.name}"
            for e in endpoints
        }
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """How to reach one server: the bus's ``opcua`` keys, resolved."""

    endpoint: str
    policy: str = "None"
    mode: str = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    certificate_dir: Path = Path("opcua")
    trust: tuple[Path, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 4.0
    watchdog_s: float = 1.0
    application_uri: str = ""

    @classmethod
    def from_options(
        cls,
        endpoint: str,
        options: Mapping[str, Any],
        *,
        state_dir: Path,
        timeout_s: float,
        gateway_id: str = "gateway",
    ) -> Settings:
        """Settings from bus options (or discovery keyword arguments)."""
        policy = str(options.get("security_policy", "None"))
        mode = str(options.get("security_mode", "None" if policy == "None" else "SignAndEncrypt"))
        cert_dir = options.get("certificate_dir")

        def opt_path(key: str) -> Path | None:
            value = options.get(key)
            return Path(value) if value else None

        return cls(
            endpoint=endpoint,
            policy=policy,
            mode=mode,
            certificate=opt_path("certificate"),
            private_key=opt_path("private_key"),
            certificate_dir=Path(cert_dir) if cert_dir else state_dir / "opcua",
            trust=tuple(Path(p) for p in options.get("trust", ())),
            username=options.get("username") or None,
            password=options.get("password"),
            timeout_s=timeout_s,
            application_uri=default_application_uri(gateway_id),
        )

    @property
    def secure(self) -> bool:
        return self.policy != "None"

    def check(self) -> list[str]:
        """What is inconsistent in these settings (empty: fine)."""
        problems = []
        if self.policy == "None" and self.mode != "None":
            problems.append(f"security_mode {self.mode} needs a security_policy other than None")
        if self.policy != "None" and self.mode == "None":
            problems.append(
                f"security_policy {self.policy} needs security_mode Sign or SignAndEncrypt"
            )
        if (self.certificate is None) != (self.private_key is None):
            problems.append("certificate and private_key go together")
        if self.secure and not self.trust:
            problems.append(
                f"security_policy {self.policy} needs the server's certificate in trust"
            )
        return problems

    def identity(self) -> AppIdentity:
        """The gateway's certificate: the configured files, or made on first run."""
        if self.certificate is not None and self.private_key is not None:
            return load_identity(self.certificate, self.private_key, self.application_uri)
        return ensure_identity(self.certificate_dir, self.application_uri)


def new_client(settings: Settings) -> Client:
    client = Client(
        settings.endpoint,
        timeout=settings.timeout_s,
        watchdog_intervall=settings.watchdog_s,
        auto_reconnect=False,
    )
    client.name = client.description = "cityedge"
    client.product_uri = "urn:cityedge:agent"
    client.application_uri = settings.application_uri
    client.session_timeout = 60_000  # a dead gateway's session goes within a minute
    return client


async def _secure(client: Client, settings: Settings) -> None:
    """Check the server's certificate against the trust list, then set the policy."""
    identity = settings.identity()
    client.application_uri = identity.application_uri
    trusted = load_trust(list(settings.trust))
    endpoints = await client.connect_and_get_server_endpoints()
    uri, mode = POLICY_URIS[settings.policy], MODES[settings.mode]
    chosen = [e for e in endpoints if e.SecurityPolicyUri == uri and e.SecurityMode == mode]
    if not chosen:
        wanted = f"{settings.policy}/{settings.mode}"
        raise SecurityMismatch(settings.endpoint, wanted, offered_security(endpoints))
    server_der = check_trusted(chosen[0].ServerCertificate or b"", trusted, settings.endpoint)
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        certificate=CertProperties(identity.cert_der, extension="der"),
        private_key=CertProperties(identity.key_pem, extension="pem"),
        server_certificate=CertProperties(server_der, extension="der"),
        mode=mode,
    )


async def open_client(settings: Settings) -> Client:
    """A connected client; raises UntrustedServer, SecurityMismatch or TransientError."""
    client = new_client(settings)
    if settings.username:
        client.set_user(settings.username)
        client.set_password(settings.password or "")
    try:
        if settings.secure:
            await _secure(client, settings)
        await asyncio.wait_for(client.connect(), settings.timeout_s * 3)
    except (UntrustedServer, SecurityMismatch):
        await close_client(client)
        raise
    except (*TRANSPORT_ERRORS, ValueError) as exc:
        await _discard(client)
        if _no_matching_endpoint(exc):
            raise await _mismatch(settings) from exc
        raise TransientError(f"cannot open {settings.endpoint}: {describe_error(exc)}") from exc
    return client


async def _discard(client: Client) -> None:
    """Close a client whose connect failed (its tasks start only once connected)."""
    if client.uaclient.protocol is None:
        # asyncua dropped the socket itself; a polite close would only log a warning.
        client.connection_lost_callback = None
        return
    await close_client(client)


def _no_matching_endpoint(exc: BaseException) -> bool:
    """asyncua's word (a plain UaError) for: the server answered, without our policy/mode."""
    return isinstance(exc, UaError) and str(exc).startswith("No matching endpoints")


async def _mismatch(settings: Settings) -> SecurityMismatch:
    """The mismatch, with what the server offers if its discovery service says."""
    client = new_client(Settings(endpoint=settings.endpoint, timeout_s=settings.timeout_s))
    offered: list[str] = []
    try:
        offered = offered_security(await client.connect_and_get_server_endpoints())
    except (*TRANSPORT_ERRORS, ValueError):
        pass  # the mismatch is the news; the list is a courtesy
    finally:
        await close_client(client)
    return SecurityMismatch(settings.endpoint, f"{settings.policy}/{settings.mode}", offered)


async def close_client(client: Client, timeout_s: float = 2.0) -> None:
    """Disconnect, whatever state the client is in; leaves no asyncua task running."""
    client.connection_lost_callback = None
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), timeout_s)
    client.disconnect_socket()
    publish = client.uaclient.session._publish_task
    if publish is not None and not publish.done():
        publish.cancel()
        with contextlib.suppress(BaseException):
            await publish


def describe_error(exc: BaseException) -> str:
    """A short human text for an exception from asyncua."""
    if isinstance(exc, UaStatusCodeError):
        return str(quality_of(exc.code).reason)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Resolved:
    """A field key's node on this server, or the status that says why there is none."""

    node: ua.NodeId | None
    status: int = 0


async def resolve(client: Client, keys: Sequence[str]) -> dict[str, Resolved]:
    """Node ids for keys; browse paths are translated in one call."""
    out: dict[str, Resolved] = {}
    paths: list[tuple[str, ua.RelativePath]] = []
    for key in keys:
        try:
            parsed = parse_key(key)
        except DecodeError:
            out[key] = Resolved(None, StatusCodes.BadNodeIdInvalid)
            continue
        if isinstance(parsed, ua.NodeId):
            out[key] = Resolved(parsed)
        else:
            paths.append((key, parsed))
    if paths:
        root = ua.NodeId.from_string("i=84")
        results = await client.translate_browsepaths(root, [p for _, p in paths])
        for (key, _), result in zip(paths, results, strict=True):
            code = result.StatusCode.value
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId
                out[key] = Resolved(ua.NodeId(target.Identifier, target.NamespaceIndex))
            else:
                out[key] = Resolved(None, code or StatusCodes.BadNoMatch)
    return out
