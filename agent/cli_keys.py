"""``cityedge keys init|show|rotate|csr``: the gateway's signing key, over its life.

Run as the signer's user (``sudo -u cityedge-signer cityedge keys ...``): the
key directory is the signer's state directory and nobody else can read it.
The functions are :mod:`cityedge.signing.keys`; docs/security.md describes the
directory, sealing and rotation.

* ``init``: the first key (``--algorithm ed25519`` or ``ed25519+mldsa65``),
  sealed at rest, or generated inside a PKCS#11 token (``--pkcs11-module``,
  ``--token-label``, ``--pin-file``; Ed25519 only).
* ``show``: key ids, fingerprints, public keys as text, rotations; with
  ``--gateway ID`` also the lines for the hub's keys file (``cityedge verify --keys``).
* ``rotate``: a new active key; prints the rotation statement (the old key
  signs the new one) the hub needs.
* ``csr``: a certificate request for the gateway's TLS client certificate
  (its own P-256 key, not the signing key); says where it wrote it.

Exit codes: 0 done, 2 wrong option, 78 a key directory or token problem
(the message says what to fix).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from cityedge.cli_util import UsageError, add_json, print_json, read_secret, say
from cityedge.errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

DEFAULT_KEY_DIR = Path("/var/lib/cityedge-signer")
DEFAULT_TLS_DIR = Path("/var/lib/cityedge/tls")
ALGORITHMS = ("ed25519", "ed25519+mldsa65")


def _common(p: argparse.ArgumentParser, *, token: bool) -> None:
    p.add_argument(
        "--key-dir",
        type=Path,
        default=DEFAULT_KEY_DIR,
        help=f"the signer's key directory (default {DEFAULT_KEY_DIR})",
    )
    p.add_argument(
        "--machine-id-file", type=Path, default=Path("/etc/machine-id"), help=argparse.SUPPRESS
    )
    if token:
        p.add_argument("--pkcs11-module", help="PKCS#11 module (.so) of the token for the key")
        p.add_argument("--token-label", help="the token's label")
        p.add_argument("--pin-file", type=Path, help="file with the token's user PIN")
    add_json(p)


def add_parser(sub: Any) -> None:
    k = sub.add_parser("keys", help="the signing key: init, show, rotate, TLS csr")
    ksub = k.add_subparsers(dest="keys_cmd", required=True, metavar="init|show|rotate|csr")

    i = ksub.add_parser("init", help="create the key directory and its first key")
    i.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="ed25519",
        help="ed25519 (default) or ed25519+mldsa65 (hybrid, post-quantum)",
    )
    _common(i, token=True)

    s = ksub.add_parser("show", help="key ids, fingerprints, public keys, rotations")
    s.add_argument("--gateway", help="also print the hub's keys-file lines for this gateway id")
    _common(s, token=False)

    r = ksub.add_parser("rotate", help="a new active key, vouched for by the old one")
    r.add_argument("--algorithm", choices=ALGORITHMS, help="default: the current key's")
    _common(r, token=True)

    c = ksub.add_parser("csr", help="a certificate request for the gateway's TLS client cert")
    c.add_argument(
        "--subject",
        required=True,
        help="a common name (gw-17.city.example) or an RFC 4514 name (CN=..,O=..)",
    )
    c.add_argument("--dns", action="append", default=[], help="a DNS name for the SAN (repeat)")
    c.add_argument(
        "--tls-dir",
        type=Path,
        default=DEFAULT_TLS_DIR,
        help=f"where client.key and client.csr go (default {DEFAULT_TLS_DIR})",
    )
    c.add_argument("--new-key", action="store_true", help="make a new TLS key, not reuse it")
    c.add_argument(
        "--no-signing-key",
        action="store_true",
        help="do not name the signing key id in the CSR (no key directory needed)",
    )
    _common(c, token=False)


def run(args: argparse.Namespace) -> int:
    from cityedge.signing.algorithms import UnknownAlgorithm
    from cityedge.signing.keys import KeyStoreError
    from cityedge.signing.pkcs11_backend import Pkcs11Error

    cmd = f"keys {args.keys_cmd}"
    handler = {"init": _init, "show": _show, "rotate": _rotate, "csr": _csr}[args.keys_cmd]
    try:
        return handler(args)
    except UsageError as exc:
        say(cmd, str(exc))
        return EXIT_USAGE
    except (KeyStoreError, Pkcs11Error, UnknownAlgorithm) as exc:
        say(cmd, str(exc))
        return EXIT_CONFIG
    except PermissionError as exc:
        say(
            cmd,
            f"{exc.filename}: permission denied; run as the signer's user "
            "(sudo -u cityedge-signer cityedge keys ...)",
        )
        return EXIT_CONFIG
    except OSError as exc:
        say(cmd, f"{exc.filename or args.key_dir}: {exc.strerror}")
        return EXIT_CONFIG


def _pkcs11(args: argparse.Namespace) -> Any:
    from cityedge.signing.pkcs11_backend import Pkcs11Config

    given = [args.pkcs11_module, args.token_label, args.pin_file]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("a token needs all of --pkcs11-module, --token-label and --pin-file")
    return Pkcs11Config(
        args.pkcs11_module, args.token_label, read_secret(args.pin_file, "--pin-file")
    )


def _init(args: argparse.Namespace) -> int:
    from cityedge.signing import keys

    if args.algorithm != "ed25519" and args.pkcs11_module:
        raise UsageError("a PKCS#11 token holds ed25519 keys only; leave out --algorithm")
    record = keys.init(
        args.key_dir, args.algorithm, machine_id_file=args.machine_id_file, pkcs11=_pkcs11(args)
    )
    doc = record.to_json()
    if args.json:
        print_json({"key_dir": str(args.key_dir), **doc})
        return EXIT_OK
    print(f"key directory {args.key_dir}: new {doc['algorithm']} key ({doc['backend']})")
    print(_key_lines(doc))
    print("give the public key to the data hub (cityedge keys show --gateway ID prints the line)")
    return EXIT_OK


def _key_lines(doc: dict[str, Any], indent: str = "  ") -> str:
    return "\n".join(
        [
            f"{indent}key id      {doc['key_id']}",
            f"{indent}fingerprint {doc['fingerprint']}",
            f"{indent}public      {doc['public']}",
        ]
    )


def _show(args: argparse.Namespace) -> int:
    from cityedge.signing import keys

    info = keys.show(args.key_dir)
    doc = info.to_json()
    stmts = [base64.b64encode(raw).decode() for raw in keys.rotations(args.key_dir)]
    doc["rotation_statements"] = stmts
    if args.gateway:
        doc["keys_file"] = keys_file_lines(args.gateway, [k["public"] for k in doc["keys"]], stmts)
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(f"key directory {args.key_dir}: {len(doc['keys'])} key(s)")
    for k in doc["keys"]:
        flag = "ACTIVE" if k["active"] else "old"
        print(f"{flag:<7}{k['algorithm']}  {k['backend']}  created {k['created']}")
        print(_key_lines(k))
    for r in doc["rotations"]:
        print(f"rotation {r['old_key_id'][:16]} -> {r['new_key_id'][:16]} at {r['created']}")
    if args.gateway:
        print("\nfor the hub's keys file (cityedge verify --keys):")
        print("\n".join(doc["keys_file"]))
    return EXIT_OK


def keys_file_lines(gateway: str, publics: list[str], rotations: list[str]) -> list[str]:
    """Lines of the verifier's keys file (format in cityedge.cli_verify)."""
    return [f"{gateway} {p}" for p in publics] + [f"rotation {r}" for r in rotations]


def _rotate(args: argparse.Namespace) -> int:
    from cityedge.signing import keys

    stmt = keys.rotate(
        args.key_dir, args.algorithm, machine_id_file=args.machine_id_file, pkcs11=_pkcs11(args)
    )
    encoded = base64.b64encode(stmt.encode()).decode()
    doc = {
        "old_key_id": stmt.old_key_id.hex(),
        "new_key_id": stmt.new_key.key_id.hex(),
        "new_fingerprint": stmt.new_key.fingerprint,
        "new_public": stmt.new_key.to_text(),
        "created": stmt.created,
        "statement": encoded,
    }
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(f"key directory {args.key_dir}: rotated to a new {stmt.new_key.algorithm} key")
    print(f"  old key id  {doc['old_key_id']}")
    print(f"  new key id  {doc['new_key_id']}")
    print(f"  fingerprint {doc['new_fingerprint']}")
    print(f"  public      {doc['new_public']}")
    print(
        "the rotation statement (the old key signs the new one; the gateway publishes it; the hub"
    )
    print("can also take it as a 'rotation' line of its keys file):")
    print(f"rotation {encoded}")
    return EXIT_OK


def _csr(args: argparse.Namespace) -> int:
    from cityedge.signing import keys

    signing_id = None
    if not args.no_signing_key:
        signing_id = bytes.fromhex(keys.active_key_id(args.key_dir))
    try:
        result = keys.csr(
            args.tls_dir,
            args.subject,
            signing_key_id=signing_id,
            dns_names=args.dns,
            new_key=args.new_key,
        )
    except ValueError as exc:  # a subject that is not an RFC 4514 name
        raise UsageError(f"--subject: {exc} (give a name like gw-17 or CN=gw-17,O=City)") from exc
    csr_path = args.tls_dir / "client.csr"
    doc = {
        "csr": str(csr_path),
        "key": str(result.key_path),
        "new_key": result.new_key,
        "signing_key_id": signing_id.hex() if signing_id else None,
        "pem": result.csr_pem.decode(),
    }
    if args.json:
        print_json(doc)
        return EXIT_OK
    made = "a new" if result.new_key else "the existing"
    print(f"certificate request written to {csr_path} (with {made} TLS key {result.key_path})")
    if signing_id:
        print(f"it names the signing key urn:cityedge:signing-key:{signing_id.hex()}")
    print(
        "send the .csr to the city's CA; put the certificate it returns where uplink.tls.cert_file"
    )
    print("points, next to the key")
    return EXIT_OK
