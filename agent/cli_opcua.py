"""``cityedge opcua endpoints|browse URL``: what a technician needs to write an OPC UA profile.

``endpoints`` asks the server's discovery service (no session, no security)
for its endpoints: security policy and mode, the server certificate's
thumbprint (compare it with the one the plant's administrator reads off the
server before putting the certificate in ``trust``), and the user token types.

``browse`` opens a session the way a bus would (same security keys) and
lists the address space below a node as a tree: each node's browse name,
class and node id, and for variables the data type and current value. A
profile field's ``key`` is either the node id or the browse path
(``--json`` shows both).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cityedge.cli_util import UsageError, add_json, print_json, read_secret, say
from cityedge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

POLICIES = ("None", "Basic256Sha256")
MODES = ("None", "Sign", "SignAndEncrypt")
MAX_DEPTH = 10
MAX_VALUE_TEXT = 60  # longer values are cut in the tree (--json has them whole)


def add_parser(sub: Any) -> None:
    o = sub.add_parser("opcua", help="OPC UA discovery: a server's endpoints, its address space")
    osub = o.add_subparsers(dest="opcua_cmd", required=True, metavar="endpoints|browse")

    e = osub.add_parser("endpoints", help="the endpoints a server offers (no session needed)")
    e.add_argument("url", metavar="URL", help="opc.tcp://host:port/path")
    e.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    add_json(e)

    b = osub.add_parser("browse", help="nodes below a node: ids, browse paths, types, values")
    b.add_argument("url", metavar="URL", help="opc.tcp://host:port/path")
    b.add_argument("--node", default="i=85", help="start node id (default i=85, Objects)")
    b.add_argument("--depth", type=int, default=2, help=f"levels, 1..{MAX_DEPTH} (default 2)")
    b.add_argument("--security-policy", choices=POLICIES, default="None")
    b.add_argument("--security-mode", choices=MODES, help="default: None, or SignAndEncrypt")
    b.add_argument("--certificate", type=Path, help="the gateway's certificate (DER or PEM)")
    b.add_argument("--private-key", type=Path, help="its private key (PEM)")
    b.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        help="a trusted server certificate (repeat for several)",
    )
    b.add_argument("--username")
    b.add_argument("--password-file", type=Path, help="file with the password on its first line")
    b.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/cityedge"),
        help="where the gateway's own certificate is kept (default /var/lib/cityedge)",
    )
    b.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    add_json(b)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    cmd = f"opcua {args.opcua_cmd}"
    try:
        _check_url(args.url)
        if args.opcua_cmd == "endpoints":
            return await _endpoints(args)
        return await _browse(args)
    except UsageError as exc:
        say(cmd, str(exc))
        return EXIT_USAGE
    except Exception as exc:  # every failure becomes one line, never a traceback
        say(cmd, _describe(exc, args.url))
        return EXIT_FAILURE


def _check_url(url: str) -> None:
    if not url.startswith("opc.tcp://"):
        raise UsageError(
            f"URL must start with opc.tcp:// like opc.tcp://10.0.0.5:4840 (got {url!r})"
        )


def _describe(exc: Exception, url: str) -> str:
    from cityedge.drivers.opcua import SecurityMismatch, UntrustedServer
    from cityedge.errors import TransientError

    if isinstance(exc, SecurityMismatch):
        return f"{exc}; {_security_hint(exc.offered, url)}"
    if isinstance(exc, UntrustedServer):
        return str(exc)
    if isinstance(exc, TransientError):
        return f"{exc} (is the server up and the port open?)"
    if isinstance(exc, TimeoutError | OSError):
        return f"cannot reach {url}: {exc or type(exc).__name__} (is the server up?)"
    return f"{type(exc).__name__}: {exc}"


def _security_hint(offered: list[str], url: str) -> str:
    """Which --security-* options to try, from the policy/mode pairs a server offers."""
    usable = [p.split("/", 1) for p in offered if p.split("/", 1)[0] in POLICIES]
    if not usable:
        if offered:
            return f"cityedge speaks only {' and '.join(POLICIES)} (ask for one on the server)"
        return (
            f"`cityedge opcua endpoints {url}` lists what it offers; "
            "choose with --security-policy and --security-mode"
        )
    policy, mode = max(usable, key=lambda p: (p[0] != "None", p[1] == "SignAndEncrypt"))
    if policy == "None":
        return "try --security-policy None (and no --security-mode)"
    return (
        f"try --security-policy {policy} --security-mode {mode} --trust SERVER_CERT "
        f"(`cityedge opcua endpoints {url}` shows the certificate's thumbprint)"
    )


async def _endpoints(args: argparse.Namespace) -> int:
    from cityedge.drivers.opcua import list_endpoints

    endpoints = await list_endpoints(args.url, timeout_s=args.timeout)
    if args.json:
        print_json(endpoints)
    else:
        print(render_endpoints(args.url, endpoints))
    return EXIT_OK


def render_endpoints(url: str, endpoints: list[dict[str, Any]]) -> str:
    if not endpoints:
        return f"{url}: the server lists no endpoints"
    first = endpoints[0]
    out = [f"{url}: {first.get('application_name')} ({first.get('application_uri')})"]
    for ep in endpoints:
        out.append(
            f"  {ep['security_policy']}/{ep['security_mode']:<15} level {ep['security_level']:<3} "
            f"users {', '.join(ep['user_token_types'])}"
        )
        out.append(f"      endpoint   {ep['endpoint_url']}")
        if ep.get("server_certificate_thumbprint"):
            out.append(f"      thumbprint {ep['server_certificate_thumbprint']}")
            out.append(f"      subject    {ep['server_certificate_subject']}")
    return "\n".join(out)


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """The bus keys browse() takes, from the command line."""
    if not 1 <= args.depth <= MAX_DEPTH:
        raise UsageError(f"--depth must be 1..{MAX_DEPTH} (got {args.depth})")
    if args.password_file and not args.username:
        raise UsageError("--password-file goes with --username")
    for opt in ("certificate", "private_key", *(["trust"] if args.trust else [])):
        paths = getattr(args, opt) if opt == "trust" else [getattr(args, opt)]
        for path in filter(None, paths):
            if not path.is_file():
                flag = "--" + opt.replace("_", "-")
                raise UsageError(f"{flag} {path}: no such file")
    sec: dict[str, Any] = {"security_policy": args.security_policy}
    if args.security_mode:
        sec["security_mode"] = args.security_mode
    if args.certificate:
        sec["certificate"] = str(args.certificate)
    if args.private_key:
        sec["private_key"] = str(args.private_key)
    if args.trust:
        sec["trust"] = [str(p) for p in args.trust]
    if args.username:
        sec["username"] = args.username
        if args.password_file:
            sec["password"] = read_secret(args.password_file, "--password-file")
    return sec


async def _browse(args: argparse.Namespace) -> int:
    from asyncua import ua
    from asyncua.ua.uaerrors import UaStringParsingError

    from cityedge.drivers.opcua import browse

    security = _security(args)
    try:
        ua.NodeId.from_string(args.node)
    except (ValueError, UaStringParsingError) as exc:
        raise UsageError(
            f"--node must be a node id like i=85, ns=2;s=Pump1 or ns=2;i=1001 (got {args.node!r})"
        ) from exc
    try:
        nodes = await browse(
            args.url,
            args.node,
            args.depth,
            state_dir=args.state_dir,
            timeout_s=args.timeout,
            **security,
        )
    except ValueError as exc:  # inconsistent security options (Settings.check)
        raise UsageError(str(exc)) from exc
    if args.json:
        print_json(nodes)
    else:
        print(render_tree(nodes))
    return EXIT_OK


def render_tree(nodes: list[dict[str, Any]]) -> str:
    """Nodes as an indented tree (browse() lists them breadth first)."""
    if not nodes:
        return "no nodes below this node"
    children: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        children.setdefault(n["browse_path"].rpartition("/")[0], []).append(n)
    out: list[str] = []

    def emit(node: dict[str, Any]) -> None:
        line = f"{'  ' * (node['depth'] - 1)}{node['browse_name']}  [{node['node_class']}]"
        line += f"  {node['node_id']}"
        if node["node_class"] == "Variable":
            value = node.get("value")
            shown = node["status"] if node.get("status") else repr(value)
            if len(shown) > MAX_VALUE_TEXT:
                shown = shown[: MAX_VALUE_TEXT - 3] + "..."
            line += f"  = {shown}"
            if node.get("data_type"):
                line += f" ({node['data_type']})"
        out.append(line)
        for child in children.get(node["browse_path"], []):
            emit(child)

    for top in [n for n in nodes if n["depth"] == 1]:
        emit(top)
    out.append(f"{len(nodes)} nodes; a profile key is the node id or the browse path (--json)")
    return "\n".join(out)
