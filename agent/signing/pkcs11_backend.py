"""Ed25519 keys inside a PKCS#11 token: generated there, used there, never extracted.

In the field the module is the TPM 2.0's or secure element's PKCS#11 library
(tpm2-pkcs11, a vendor's module); in tests it is SoftHSM2 (Debian package
``softhsm2``, module ``/usr/lib/softhsm/libsofthsm2.so``). Uses python-pkcs11
(the optional ``pkcs11`` extra), imported only when a token is configured.

Private keys are created with ``CKA_SENSITIVE = true``, ``CKA_EXTRACTABLE =
false``, ``CKA_TOKEN = true``: the token refuses to export their value, so
even root on the gateway can only ask the token to sign, not copy the key.
The hybrid mode is not offered here: no common token implements ML-DSA yet.
"""

from __future__ import annotations

import importlib
import secrets
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from cityedge.signing.algorithms import DIGEST_SIZE, ED25519, PublicKey

ED25519_OID = "1.3.101.112"
DEFAULT_LABEL = "cityedge-signing"
_libs: dict[str, Any] = {}
_lock = threading.Lock()


class Pkcs11Error(Exception):
    """The token or its module failed (missing module, wrong PIN, no such key)."""


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """Where the token is. ``pin`` is never printed."""

    module: str
    token_label: str
    pin: str = field(repr=False)


def _pkcs11() -> ModuleType:
    try:
        return importlib.import_module("pkcs11")
    except ImportError as exc:
        raise Pkcs11Error("PKCS#11 needs python-pkcs11: pip install 'cityedge[pkcs11]'") from exc


def _session(cfg: Pkcs11Config) -> Any:
    p11 = _pkcs11()
    with _lock:
        lib = _libs.get(cfg.module)
        if lib is None:
            try:
                lib = p11.lib(cfg.module)
            except Exception as exc:  # the module raises its own types
                raise Pkcs11Error(f"cannot load PKCS#11 module {cfg.module}: {exc}") from exc
            _libs[cfg.module] = lib
    try:
        token = lib.get_token(token_label=cfg.token_label)
        try:
            return token.open(user_pin=cfg.pin, rw=True)
        except p11.exceptions.UserAlreadyLoggedIn:
            # The login is per process, shared by its sessions (PKCS#11 §5.6).
            return token.open(rw=True)
    except Exception as exc:
        raise Pkcs11Error(f"cannot open token {cfg.token_label!r}: {exc!r}") from exc


def _public_from_point(point: bytes) -> PublicKey:
    # CKA_EC_POINT is a DER OCTET STRING around the 32 raw bytes.
    if len(point) == 34 and point[0] == 0x04 and point[1] == 32:
        point = point[2:]
    return PublicKey(ED25519, bytes(point))


def generate(cfg: Pkcs11Config, label: str = DEFAULT_LABEL) -> tuple[bytes, PublicKey]:
    """Generate an Ed25519 key pair in the token; returns (CKA_ID, public key)."""
    p11 = _pkcs11()
    from_ec = importlib.import_module("pkcs11.util.ec")
    a, kt, mech = p11.Attribute, p11.KeyType, p11.Mechanism
    cka_id = secrets.token_bytes(16)
    common = {a.LABEL: label, a.ID: cka_id, a.TOKEN: True}
    session = _session(cfg)
    try:
        pub, _priv = session.generate_keypair(
            kt.EC_EDWARDS,
            mechanism=mech.EC_EDWARDS_KEY_PAIR_GEN,
            public_template={
                **common,
                a.EC_PARAMS: from_ec.encode_named_curve_parameters(ED25519_OID),
                a.VERIFY: True,
            },
            private_template={
                **common,
                a.SIGN: True,
                a.SENSITIVE: True,
                a.EXTRACTABLE: False,
                a.PRIVATE: True,
            },
            store=True,
        )
        return cka_id, _public_from_point(bytes(pub[a.EC_POINT]))
    except Pkcs11Error:
        raise
    except Exception as exc:
        raise Pkcs11Error(f"key generation in the token failed: {exc!r}") from exc
    finally:
        session.close()


class Pkcs11Key:
    """A signing key that stays in the token; implements ``sign_digest``."""

    backend = "pkcs11"

    def __init__(self, cfg: Pkcs11Config, cka_id: bytes) -> None:
        p11 = _pkcs11()
        self._a, self._mech = p11.Attribute, p11.Mechanism
        self._session = _session(cfg)
        try:
            self._priv = self._session.get_key(object_class=p11.ObjectClass.PRIVATE_KEY, id=cka_id)
            pub = self._session.get_key(object_class=p11.ObjectClass.PUBLIC_KEY, id=cka_id)
            self.public = _public_from_point(bytes(pub[self._a.EC_POINT]))
        except Exception as exc:
            self._session.close()
            raise Pkcs11Error(f"no key with id {cka_id.hex()} in the token: {exc!r}") from exc
        self.algorithm = ED25519
        self.cka_id = cka_id

    @property
    def key_id(self) -> bytes:
        return self.public.key_id

    def sign_digest(self, digest: bytes) -> tuple[bytes, ...]:
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"a digest is {DIGEST_SIZE} bytes")
        try:
            return (bytes(self._priv.sign(digest, mechanism=self._mech.EDDSA)),)
        except Exception as exc:
            raise Pkcs11Error(f"the token refused to sign: {exc!r}") from exc

    def attributes(self) -> dict[str, bool]:
        """The private key's export-relevant attributes, as the token reports them."""
        a = self._a
        return {
            "sensitive": bool(self._priv[a.SENSITIVE]),
            "extractable": bool(self._priv[a.EXTRACTABLE]),
            "never_extractable": bool(self._priv[a.NEVER_EXTRACTABLE]),
        }

    def try_export(self) -> bytes | None:
        """Ask the token for the private value; None when it refuses (it should)."""
        try:
            return bytes(self._priv[self._a.VALUE])
        except Exception:
            return None

    def close(self) -> None:
        self._session.close()
