"""The gateway's OPC UA application certificate and the server trust list.

OPC UA identifies applications by certificate. On first run the gateway
makes its own: RSA 2048, self-signed, valid ten years, with the application
URI in the subjectAltName as Part 6 6.2.2 requires (servers reject a client
certificate without it) and the host name as a DNS name. The private key is
written with mode 0600 before any byte of it is. The files are reused on
every later run, so a server administrator trusts the gateway once.

Servers are trusted explicitly: the bus's ``trust`` list names their
certificate files; a server presenting any other certificate is refused
(:class:`UntrustedServer`), never trusted on first use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "cityedge-cert.der"
KEY_FILE = "cityedge-key.pem"
VALID_DAYS = 3650


class UntrustedServer(Exception):
    """The server's certificate is not in the bus's trust list."""


@dataclass(frozen=True, slots=True)
class AppIdentity:
    """The gateway's certificate (DER), private key (PEM) and application URI."""

    cert_der: bytes
    key_pem: bytes
    application_uri: str
    cert_path: Path
    key_path: Path


def thumbprint(der: bytes) -> str:
    """SHA-1 of the DER certificate in hex: what OPC UA tools show as thumbprint."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def load_cert_der(path: Path) -> bytes:
    """A certificate file (PEM or DER) as DER bytes."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(data)
    else:
        cert = x509.load_der_x509_certificate(data)
    return cert.public_bytes(serialization.Encoding.DER)


def first_cert(der: bytes) -> bytes:
    """The leading certificate of a DER chain (servers may send their chain)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    size = der[1]
    if size < 0x80:
        return der[: 2 + size]
    n = size & 0x7F
    return der[: 2 + n + int.from_bytes(der[2 : 2 + n], "big")]


def load_trust(paths: list[Path]) -> dict[str, bytes]:
    """The trusted server certificates by thumbprint."""
    trusted: dict[str, bytes] = {}
    for path in paths:
        der = load_cert_der(path)
        trusted[thumbprint(der)] = der
    return trusted


def check_trusted(der: bytes, trusted: dict[str, bytes], where: str) -> bytes:
    """The trusted certificate the server presented; raises UntrustedServer."""
    der = first_cert(der)
    if thumbprint(der) in trusted:
        return der
    subject = describe(der)
    raise UntrustedServer(
        f"server {where} presented certificate {thumbprint(der)} ({subject}) that is not in "
        "the bus's trust list: verify it with the server's administrator and add its file "
        "to `trust`"
    )


def describe(der: bytes) -> str:
    """The subject of a certificate, or a note that it does not parse."""
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "unparsable certificate"


def application_uri_of(der: bytes) -> str | None:
    """The first URI in the certificate's subjectAltName."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def default_application_uri(gateway_id: str) -> str:
    return f"urn:{socket.gethostname()}:cityedge:{gateway_id}"


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (whatever the umask) and write ``data``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_certificate(application_uri: str, key: rsa.RSAPrivateKey, name: str) -> bytes:
    """A self-signed OPC UA application instance certificate (DER)."""
    host = socket.gethostname()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cityedge"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=True,
        data_encipherment=True,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)]
    )
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def ensure_identity(
    cert_dir: Path, application_uri: str, name: str = "cityedge gateway"
) -> AppIdentity:
    """Load the gateway's certificate from ``cert_dir``, making it on first run."""
    cert_path, key_path = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    if not (cert_path.is_file() and key_path.is_file()):
        cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, key_pem)
        cert_path.write_bytes(make_certificate(application_uri, key, name))
    return load_identity(cert_path, key_path, application_uri)


def load_identity(cert_path: Path, key_path: Path, fallback_uri: str) -> AppIdentity:
    """An identity from given files; its application URI is the one in the certificate."""
    cert_der = load_cert_der(cert_path)
    key_data = key_path.read_bytes()
    if not key_data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_der_private_key(key_data, password=None)
        key_data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    uri = application_uri_of(cert_der) or fallback_uri
    return AppIdentity(cert_der, key_data, uri, cert_path, key_path)
