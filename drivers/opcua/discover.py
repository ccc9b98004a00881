"""What a technician needs to write a profile: endpoints and the address space.

* :func:`list_endpoints` asks a server's discovery service (no session, no
  security needed) for its endpoints: security policy and mode, the server
  certificate's thumbprint (to check against the one the administrator
  reads off the server before adding it to ``trust``) and the user token
  types it accepts.
* :func:`browse` walks the address space from a node (Objects by default)
  along hierarchical references and lists every node with its node id and
  browse path (either can be a profile field's ``key``), its class, and for
  variables the data type and the current value.
"""

from __future__ import annotations

import contextlib
from collections import deque
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames
from asyncua.ua.uaerrors import UaStatusCodeError

from cityedge.drivers.opcua.certs import describe, first_cert, thumbprint
from cityedge.drivers.opcua.client import Settings, close_client, new_client, open_client

DEFAULT_STATE_DIR = Path("/var/lib/cityedge")
MAX_NODES = 5_000  # a browse never lists more than this
MAX_PARENTS = 32  # how far up to look for the path of the start node


def _short_policy(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] if uri else "None"


def _mode_name(mode: ua.MessageSecurityMode) -> str:
    return "None" if mode == ua.MessageSecurityMode.None_ else mode.name


async def list_endpoints(url: str, timeout_s: float = 4.0) -> list[dict[str, Any]]:
    """The endpoints a server offers, as JSON-ready dicts."""
    client = new_client(Settings(endpoint=url, timeout_s=timeout_s))
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    finally:
        await close_client(client)
    out = []
    for ep in endpoints:
        der = first_cert(ep.ServerCertificate) if ep.ServerCertificate else b""
        out.append(
            {
                "endpoint_url": ep.EndpointUrl,
                "security_policy": _short_policy(ep.SecurityPolicyUri),
                "security_policy_uri": ep.SecurityPolicyUri,
                "security_mode": _mode_name(ep.SecurityMode),
                "security_level": ep.SecurityLevel,
                "server_certificate_thumbprint": thumbprint(der) if der else None,
                "server_certificate_subject": describe(der) if der else None,
                "user_token_types": sorted({t.TokenType.name for t in ep.UserIdentityTokens}),
                "application_uri": ep.Server.ApplicationUri,
                "application_name": ep.Server.ApplicationName.Text,
            }
        )
    return out


async def browse(
    url: str,
    node: str = "i=85",
    depth: int = 2,
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout_s: float = 4.0,
    **security: Any,
) -> list[dict[str, Any]]:
    """Nodes below ``node`` down to ``depth`` levels, as JSON-ready dicts.

    ``security`` takes the bus keys: ``security_policy``, ``security_mode``,
    ``certificate``, ``private_key``, ``certificate_dir``, ``trust``,
    ``username``, ``password``. Raises UntrustedServer, SecurityMismatch or
    TransientError like the source does.
    """
    settings = Settings.from_options(url, security, state_dir=state_dir, timeout_s=timeout_s)
    problems = settings.check()
    if problems:
        raise ValueError("; ".join(problems))
    client = await open_client(settings)
    try:
        start = ua.NodeId.from_string(node)
        return await _walk(client, start, await _path_of(client, start), depth)
    finally:
        await close_client(client)


def _qualified(name: ua.QualifiedName) -> str:
    return f"{name.NamespaceIndex}:{name.Name}"


async def _browse_refs(
    client: Client, node: ua.NodeId, direction: ua.BrowseDirection
) -> list[ua.ReferenceDescription]:
    desc = ua.BrowseDescription(
        NodeId=node,
        BrowseDirection=direction,
        ReferenceTypeId=ua.NodeId.from_string("i=33"),
        IncludeSubtypes=True,
        NodeClassMask=0,
        ResultMask=ua.BrowseResultMask.All,
    )
    params = ua.BrowseParameters(NodesToBrowse=[desc], RequestedMaxReferencesPerNode=0)
    result = (await client.uaclient.browse(params))[0]
    refs = list(result.References)
    while result.ContinuationPoint and len(refs) < MAX_NODES:
        nxt = ua.BrowseNextParameters(ContinuationPoints=[result.ContinuationPoint])
        result = (await client.uaclient.browse_next(nxt))[0]
        refs.extend(result.References)
    return refs


async def _path_of(client: Client, node: ua.NodeId) -> str:
    """The browse path from Root to ``node`` (empty for Root itself)."""
    root = ua.NodeId.from_string("i=84")
    names: list[str] = []
    current = node
    for _ in range(MAX_PARENTS):
        if current == root:
            return "/".join(reversed(names))
        name = await client.get_node(current).read_browse_name()
        names.append(_qualified(name))
        parents = await _browse_refs(client, current, ua.BrowseDirection.Inverse)
        if not parents:
            break
        target = parents[0].NodeId
        current = ua.NodeId(target.Identifier, target.NamespaceIndex)
    return "/".join(reversed(names))


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, list):
        return [_json_value(v) for v in value[:32]]
    return str(value)


def _type_name(node: ua.NodeId) -> str:
    if node.NamespaceIndex == 0 and isinstance(node.Identifier, int):
        return str(ObjectIdNames.get(node.Identifier, node.to_string()))
    return node.to_string()


async def _walk(
    client: Client, start: ua.NodeId, start_path: str, depth: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    seen = {start}
    frontier: deque[tuple[ua.NodeId, str, int]] = deque([(start, start_path, 0)])
    while frontier and len(found) < MAX_NODES:
        parent, path, level = frontier.popleft()
        if level >= depth:
            continue
        for ref in await _browse_refs(client, parent, ua.BrowseDirection.Forward):
            target = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex)
            if target in seen or len(found) >= MAX_NODES:
                continue
            seen.add(target)
            child_path = (
                f"{path}/{_qualified(ref.BrowseName)}" if path else _qualified(ref.BrowseName)
            )
            found.append(
                {
                    "node_id": target.to_string(),
                    "browse_name": _qualified(ref.BrowseName),
                    "browse_path": child_path,
                    "display_name": ref.DisplayName.Text,
                    "node_class": ref.NodeClass.name,
                    "depth": level + 1,
                }
            )
            frontier.append((target, child_path, level + 1))
    await _add_values(client, [f for f in found if f["node_class"] == "Variable"])
    return found


async def _add_values(client: Client, variables: list[dict[str, Any]]) -> None:
    """Data type and value of each variable, read in two calls."""
    if not variables:
        return
    nodes = [ua.NodeId.from_string(v["node_id"]) for v in variables]
    with contextlib.suppress(UaStatusCodeError):
        types = await client.uaclient.read_attributes(nodes, AttributeIds.DataType)
        for info, dv in zip(variables, types, strict=True):
            if dv.Value is not None and isinstance(dv.Value.Value, ua.NodeId):
                info["data_type"] = _type_name(dv.Value.Value)
    with contextlib.suppress(UaStatusCodeError):
        values = await client.uaclient.read_attributes(nodes, AttributeIds.Value)
        for info, dv in zip(variables, values, strict=True):
            status = dv.StatusCode.value if dv.StatusCode is not None else 0
            if status & 0x80000000:
                info["status"] = dv.StatusCode.name if dv.StatusCode else "Bad"
                info["value"] = None
            else:
                info["value"] = _json_value(dv.Value.Value if dv.Value is not None else None)
