"""The signer's wire protocol over its Unix socket. Pure.

Every message is a frame: a 4-byte big-endian length, then that many bytes.

Requests (at most :data:`MAX_REQUEST` bytes; anything longer is refused and
the connection closed, since the stream can no longer be trusted):

=====  ===========  =======================================
op     name         rest of the frame
=====  ===========  =======================================
0x01   SIGN         key id (32 bytes) || digest (64 bytes)
0x02   KEY_INFO     nothing
0x03   PUBLIC_KEYS  nothing
=====  ===========  =======================================

Responses: ``0x00 || data`` (ok) or ``0x01 || reason`` (error; ASCII
snake_case, one of :data:`REASONS`). SIGN data is a count byte, then per
signature a 2-byte length and the signature; KEY_INFO and PUBLIC_KEYS data is
UTF-8 JSON (docs/security.md).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from cityedge.signing.algorithms import DIGEST_SIZE, PublicKey

FRAME = struct.Struct(">I")
OP_SIGN, OP_KEY_INFO, OP_PUBLIC_KEYS = 1, 2, 3
OPS = {OP_SIGN: "sign", OP_KEY_INFO: "key_info", OP_PUBLIC_KEYS: "public_keys"}
KEY_ID_SIZE = 32
MAX_REQUEST = 256
MAX_RESPONSE = 1024 * 1024
OK, ERR = 0, 1
REASONS = (
    "bad_request",  # a frame that does not parse
    "too_large",  # a frame over MAX_REQUEST (connection closed)
    "unknown_op",
    "unknown_key",  # not the signer's active key: ask KEY_INFO again
    "forbidden",  # the caller's uid is not allowed (connection closed)
    "busy",  # too many connections
    "internal",  # the key or token failed; see the signer's log
)


class SignerError(Exception):
    """The signer answered with an error; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"signer refused: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class SignerUnavailable(SignerError):
    """The signer cannot be reached (not running, socket missing, timed out).

    Transient: keep the batch's readings in the outbox and try again later.
    Nothing may leave unsigned.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("unavailable", detail)


class KeyChanged(SignerError):
    """The signer's active key is not the one asked for (it was rotated)."""

    def __init__(self) -> None:
        super().__init__("unknown_key", "the signer's key changed; ask key_info again")


class ProtocolError(ValueError):
    """A malformed frame; ``reason`` is the error to answer with."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    key_id: bytes = b""
    digest: bytes = b""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The signer's active key as it reports it."""

    key_id: bytes
    algorithm: str
    public: PublicKey
    backend: str  # "sealed" or "pkcs11"

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id.hex(),
            "algorithm": self.algorithm,
            "public": self.public.to_text(),
            "fingerprint": self.public.fingerprint,
            "backend": self.backend,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> KeyInfo:
        public = PublicKey.from_text(str(doc["public"]))
        if public.key_id.hex() != doc["key_id"]:
            raise ValueError("key info: key id does not match the public key")
        return cls(public.key_id, public.algorithm, public, str(doc["backend"]))


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload)) + payload


def encode_request(req: Request) -> bytes:
    if req.op == OP_SIGN:
        if len(req.key_id) != KEY_ID_SIZE or len(req.digest) != DIGEST_SIZE:
            raise ValueError("sign needs a 32-byte key id and a 64-byte digest")
        return frame(bytes((OP_SIGN,)) + req.key_id + req.digest)
    return frame(bytes((req.op,)))


def check_length(length: int) -> None:
    """Refuse a request frame length before reading its body."""
    if length > MAX_REQUEST:
        raise ProtocolError("too_large", f"request of {length} bytes (limit {MAX_REQUEST})")
    if length == 0:
        raise ProtocolError("bad_request", "empty request")


def parse_request(payload: bytes) -> Request:
    """Parse one request frame's payload. Raises only :class:`ProtocolError`."""
    check_length(len(payload))
    op = payload[0]
    if op not in OPS:
        raise ProtocolError("unknown_op", f"op {op}")
    if op == OP_SIGN:
        if len(payload) != 1 + KEY_ID_SIZE + DIGEST_SIZE:
            raise ProtocolError("bad_request", f"sign request of {len(payload)} bytes (need 97)")
        return Request(op, payload[1:33], payload[33:])
    if len(payload) != 1:
        raise ProtocolError("bad_request", f"{OPS[op]} takes no arguments")
    return Request(op)


def encode_ok(data: bytes) -> bytes:
    return frame(bytes((OK,)) + data)


def encode_error(reason: str) -> bytes:
    return frame(bytes((ERR,)) + reason.encode())


def encode_signatures(sigs: tuple[bytes, ...]) -> bytes:
    return bytes((len(sigs),)) + b"".join(struct.pack(">H", len(s)) + s for s in sigs)


def parse_response(payload: bytes) -> bytes:
    """The data of an ok response; raises SignerError for an error response."""
    if not payload or payload[0] not in (OK, ERR):
        raise SignerError("bad_response", "malformed response frame")
    if payload[0] == ERR:
        reason = payload[1:].decode("ascii", "replace")
        if reason == "unknown_key":
            raise KeyChanged()
        raise SignerError(reason)
    return payload[1:]


def decode_signatures(data: bytes) -> tuple[bytes, ...]:
    if not data:
        raise SignerError("bad_response", "empty signature list")
    sigs, at = [], 1
    for _ in range(data[0]):
        if at + 2 > len(data):
            raise SignerError("bad_response", "truncated signature list")
        (n,) = struct.unpack_from(">H", data, at)
        sigs.append(data[at + 2 : at + 2 + n])
        at += 2 + n
    if at != len(data) or any(not s for s in sigs):
        raise SignerError("bad_response", "signature list length mismatch")
    return tuple(sigs)


def decode_json(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignerError("bad_response", str(exc)) from exc
    if not isinstance(doc, dict):
        raise SignerError("bad_response", "not a JSON object")
    return doc
