"""`cityedge opcua endpoints|browse` and `scan opc.tcp://...` against a real asyncua server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityedge import cli_opcua, cli_scan
from cityedge.cli import main, parser
from cityedge.drivers.opcua.certs import load_cert_der, thumbprint
from tests.peers.modbus import async_test, free_port
from tests.peers.opcua import OpcUaPeer, make_server_cert, serving

USERS = {"tech": "s3cret"}


@async_test
async def test_endpoints_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """endpoints prints each policy/mode with the server's thumbprint; --json the same as data."""
    server = make_server_cert(tmp_path / "srv")
    async with serving(OpcUaPeer(free_port(), cert=server, users=USERS)) as peer:
        code = await cli_opcua.run_async(parser().parse_args(["opcua", "endpoints", peer.url]))
        text = capsys.readouterr().out
        args = parser().parse_args(["opcua", "endpoints", peer.url, "--json"])
        assert await cli_opcua.run_async(args) == 0
        doc = json.loads(capsys.readouterr().out)
    want = thumbprint(load_cert_der(server.cert))
    assert code == 0
    assert "Basic256Sha256/SignAndEncrypt" in text and "Basic256Sha256/Sign " in text
    assert want in text and "UserName" in text
    assert {e["server_certificate_thumbprint"] for e in doc} == {want}


@async_test
async def test_scan_of_an_opcua_url_lists_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    """`cityedge scan opc.tcp://...` is OPC UA endpoint discovery."""
    async with serving(OpcUaPeer(free_port())) as peer:
        code = await cli_scan.run_async(parser().parse_args(["scan", peer.url]))
    assert code == 0
    assert "None/None" in capsys.readouterr().out


@async_test
async def test_browse_prints_a_tree_with_ids_and_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """browse from Objects shows the pump and, indented below it, its variables with values."""
    async with serving(OpcUaPeer(free_port())) as peer:
        argv = ["opcua", "browse", peer.url, "--state-dir", str(tmp_path)]
        code = await cli_opcua.run_async(parser().parse_args(argv))
        lines = capsys.readouterr().out.splitlines()
        json_argv = [*argv, "--node", "ns=2;s=Pump1", "--depth", "1", "--json"]
        assert await cli_opcua.run_async(parser().parse_args(json_argv)) == 0
        nodes = json.loads(capsys.readouterr().out)
    assert code == 0
    pump = next(i for i, line in enumerate(lines) if line.startswith("2:Pump1  [Object]"))
    assert "ns=2;s=Pump1" in lines[pump]
    below = lines[pump + 1 : pump + 6]
    assert all(line.startswith("  2:") for line in below), below
    assert any("ns=2;s=Pump1.Pressure  = 1.5 (Float)" in line for line in below)
    assert any("BadSensorFailure" in line for line in below)
    assert {n["browse_path"] for n in nodes} >= {"0:Objects/2:Pump1/2:Speed"}


@async_test
async def test_secure_browse_with_user_and_trust(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Basic256Sha256 SignAndEncrypt with --trust and --password-file browses the pump."""
    server = make_server_cert(tmp_path / "srv")
    from cityedge.drivers.opcua.certs import default_application_uri, ensure_identity

    identity = ensure_identity(tmp_path / "opcua", default_application_uri("gateway"))
    peer = OpcUaPeer(free_port(), cert=server, users=USERS, trusted_clients={identity.cert_der})
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    async with serving(peer):
        argv = ["opcua", "browse", peer.url, "--node", "ns=2;s=Pump1", "--depth", "1",
                "--security-policy", "Basic256Sha256", "--trust", str(server.cert),
                "--username", "tech", "--password-file", str(pw),
                "--state-dir", str(tmp_path)]  # fmt: skip
        code = await cli_opcua.run_async(parser().parse_args(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "2:Speed" in out.out


@async_test
async def test_untrusted_server_is_refused_with_its_thumbprint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A server certificate not in --trust: exit 1, the message names the server's thumbprint."""
    server = make_server_cert(tmp_path / "srv")
    other = make_server_cert(tmp_path / "other", name="other")
    async with serving(OpcUaPeer(free_port(), cert=server)) as peer:
        argv = ["opcua", "browse", peer.url, "--security-policy", "Basic256Sha256",
                "--trust", str(other.cert), "--state-dir", str(tmp_path)]  # fmt: skip
        code = await cli_opcua.run_async(parser().parse_args(argv))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("cityedge opcua browse: ")
    assert thumbprint(load_cert_der(server.cert)) in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["opcua", "endpoints", "http://x"], "must start with opc.tcp://"),
        (["opcua", "browse", "opc.tcp://127.0.0.1:1/", "--depth", "0"], "--depth must be 1..10"),
        (["opcua", "browse", "opc.tcp://127.0.0.1:1/", "--node", "Pump1"], "--node must be"),
        (["opcua", "browse", "opc.tcp://127.0.0.1:1/", "--security-policy", "Basic256Sha256"],
         "needs the server's certificate in trust"),
        (["opcua", "browse", "opc.tcp://127.0.0.1:1/", "--trust", "/nope.der"], "no such file"),
    ],
)  # fmt: skip
def test_wrong_options_exit_2_and_say_what_is_allowed(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """Each wrong option: exit 2 and one line saying what is allowed."""
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit 1 and a line saying the server cannot be reached."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/"
    assert main(["opcua", "endpoints", url, "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cityedge opcua endpoints: ") and "Traceback" not in err


@async_test
async def test_browse_without_the_servers_policy_says_it_is_up_and_what_it_offers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A Basic256Sha256-only server browsed with no --security-policy: up, offers, which options."""
    server = make_server_cert(tmp_path / "srv")
    async with serving(OpcUaPeer(free_port(), cert=server)) as peer:
        argv = ["opcua", "browse", peer.url, "--state-dir", str(tmp_path)]
        code = await cli_opcua.run_async(parser().parse_args(argv))
    err = capsys.readouterr().err
    assert code == 1
    assert f"server {peer.url} is up but offers no None/None endpoint" in err
    assert "it offers Basic256Sha256/Sign, Basic256Sha256/SignAndEncrypt" in err
    assert "try --security-policy Basic256Sha256 --security-mode SignAndEncrypt --trust" in err
    assert "is the server up" not in err and len(err.splitlines()) == 1


def test_security_hint_from_what_a_server_offers() -> None:
    """The hint picks the best usable pair; unsupported policies or none known say so."""
    hint = cli_opcua._security_hint
    assert hint(["None/None"], "u") == "try --security-policy None (and no --security-mode)"
    assert "--security-mode Sign --trust" in hint(["Basic256Sha256/Sign", "None/None"], "u")
    assert "speaks only None and Basic256Sha256" in hint(["Aes256_Sha256_RsaPss/Sign"], "u")
    assert "`cityedge opcua endpoints u` lists what it offers" in hint([], "u")
