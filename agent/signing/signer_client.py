"""Clients of the signer daemon, and an in-process stand-in.

* :class:`SyncSignerClient`: blocking, for the outbox thread (the batch is
  sealed inside the SQLite transaction that cuts it).
* :class:`SignerClient`: asyncio, for the event loop (attestation records,
  showing key info).
* :class:`LocalSigner`: a key in this process; for tests, benchmarks and the
  hub's own tools. Never in the production agent.

Both socket clients keep one connection, open it on first use, and reopen it
once when a reused connection turns out dead (the signer restarted): a
signature request is idempotent. Anything else raises
:class:`~cityedge.signing.protocol.SignerUnavailable` within ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

from cityedge.signing.algorithms import DIGEST_SIZE
from cityedge.signing.keys import SigningKey
from cityedge.signing.protocol import (
    FRAME,
    MAX_RESPONSE,
    OP_KEY_INFO,
    OP_PUBLIC_KEYS,
    OP_SIGN,
    KeyChanged,
    KeyInfo,
    Request,
    SignerError,
    SignerUnavailable,
    decode_json,
    decode_signatures,
    encode_request,
    parse_response,
)

DEFAULT_SOCKET = Path("/run/cityedge-signer/signer.sock")


def _sign_request(digest: bytes, key_id: bytes) -> bytes:
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a digest is {DIGEST_SIZE} bytes (got {len(digest)})")
    return encode_request(Request(OP_SIGN, key_id, digest))


def _key_info(data: bytes) -> KeyInfo:
    try:
        return KeyInfo.from_json(decode_json(data))
    except (KeyError, ValueError) as exc:
        raise SignerError("bad_response", f"key info: {exc}") from exc


def _check_length(length: int) -> None:
    if length > MAX_RESPONSE:
        raise SignerError("bad_response", f"response of {length} bytes")


class SyncSignerClient:
    """Blocking client; thread-safe (one request at a time)."""

    def __init__(self, socket_path: Path = DEFAULT_SOCKET, *, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def key_info(self) -> KeyInfo:
        return _key_info(self._call(encode_request(Request(OP_KEY_INFO))))

    def sign(self, digest: bytes, key_id: bytes) -> tuple[bytes, ...]:
        return decode_signatures(self._call(_sign_request(digest, key_id)))

    def public_keys(self) -> dict[str, Any]:
        """``{"active": hex, "keys": [lines], "rotations": [base64]}``."""
        return decode_json(self._call(encode_request(Request(OP_PUBLIC_KEYS))))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> SyncSignerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, request: bytes) -> bytes:
        with self._lock:
            reused = self._sock is not None
            try:
                return parse_response(self._roundtrip(request))
            except SignerUnavailable:
                if not reused:
                    raise
            return parse_response(self._roundtrip(request))

    def _roundtrip(self, request: bytes) -> bytes:
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout_s)
                try:
                    sock.connect(str(self.socket_path))
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock
            self._sock.sendall(request)
            (length,) = FRAME.unpack(self._recv(FRAME.size))
            _check_length(length)
            return self._recv(length)
        except (OSError, EOFError) as exc:  # socket.timeout is an OSError
            self._drop()
            raise SignerUnavailable(f"{self.socket_path}: {exc!r}") from exc
        except SignerError:
            self._drop()
            raise

    def _recv(self, n: int) -> bytes:
        assert self._sock is not None
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the signer closed the connection")
            buf += chunk
        return bytes(buf)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SignerClient:
    """asyncio client; requests on one connection are serialised."""

    def __init__(self, socket_path: Path = DEFAULT_SOCKET, *, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def key_info(self) -> KeyInfo:
        return _key_info(await self._call(encode_request(Request(OP_KEY_INFO))))

    async def sign(self, digest: bytes, key_id: bytes) -> tuple[bytes, ...]:
        return decode_signatures(await self._call(_sign_request(digest, key_id)))

    async def public_keys(self) -> dict[str, Any]:
        return decode_json(await self._call(encode_request(Request(OP_PUBLIC_KEYS))))

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()

    async def __aenter__(self) -> SignerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, request: bytes) -> bytes:
        async with self._lock:
            reused = self._conn is not None
            try:
                return parse_response(await self._roundtrip(request))
            except SignerUnavailable:
                if not reused:
                    raise
            return parse_response(await self._roundtrip(request))

    async def _roundtrip(self, request: bytes) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._conn is None:
                    self._conn = await asyncio.open_unix_connection(str(self.socket_path))
                reader, writer = self._conn
                writer.write(request)
                await writer.drain()
                (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
                _check_length(length)
                return await reader.readexactly(length)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self._drop()
            raise SignerUnavailable(f"{self.socket_path}: {exc!r}") from exc
        except SignerError:
            await self._drop()
            raise

    async def _drop(self) -> None:
        if self._conn is not None:
            _reader, writer = self._conn
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await writer.wait_closed()


class LocalSigner:
    """A :class:`~cityedge.signing.chain.DigestSigner` over a key in this process."""

    def __init__(self, key: SigningKey, backend: str = "local") -> None:
        self.key = key
        self.backend = backend

    def key_info(self) -> KeyInfo:
        return KeyInfo(self.key.key_id, self.key.algorithm, self.key.public, self.backend)

    def sign(self, digest: bytes, key_id: bytes) -> tuple[bytes, ...]:
        if key_id != self.key.key_id:
            raise KeyChanged()
        return self.key.sign_digest(digest)
