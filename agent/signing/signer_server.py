"""The signer daemon: the only process that can use the gateway's signing key.

    python -m cityedge.signing.signer_server --key-dir DIR --socket PATH \\
        --allowed-uid UID [--allowed-uid UID ...] \\
        [--pkcs11-module SO --token-label LABEL --pin-file FILE]

No network: it listens on one Unix socket (mode 0660) and checks every
caller's uid with SO_PEERCRED against the allow-list; others are refused,
logged and counted. It answers three requests (see
:mod:`cityedge.signing.protocol`): sign a 64-byte digest with the active key,
the active key's info, the public keys and rotation statements. It never sees
a batch body and never sends a private key anywhere.

The key is unsealed from the key directory into this process's memory (which
is made non-dumpable), or used inside a PKCS#11 token where it never leaves.
A rotation (``cityedge keys rotate``, run as the signer's user) is picked up
by itself: the signer watches the directory's ``current`` file; SIGHUP forces
a reload. Exits 78 (EX_CONFIG) on a missing or unreadable key, so systemd does
not restart it in a loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import pwd
import signal
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from cityedge import logs
from cityedge.signing import keys
from cityedge.signing.pkcs11_backend import Pkcs11Config, Pkcs11Error
from cityedge.signing.protocol import (
    FRAME,
    OP_KEY_INFO,
    OP_PUBLIC_KEYS,
    OP_SIGN,
    KeyInfo,
    ProtocolError,
    check_length,
    encode_error,
    encode_ok,
    encode_signatures,
    parse_request,
)

log = structlog.get_logger("cityedge.signer")
EXIT_CONFIG = 78
MAX_CONNECTIONS = 16
FRAME_TIMEOUT_S = 5.0  # a started frame must complete within this
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class SignerService:
    """Request handling and key state; :meth:`serve` runs the socket."""

    def __init__(
        self,
        key_dir: Path,
        allowed_uids: Sequence[int],
        *,
        machine_id_file: Path = keys.MACHINE_ID,
        pkcs11: Pkcs11Config | None = None,
    ) -> None:
        self.key_dir = key_dir
        self.allowed = frozenset(allowed_uids)
        self.machine_id_file = machine_id_file
        self.pkcs11 = pkcs11
        self.counters = {
            "requests": 0,
            "signed": 0,
            "refused_peers": 0,
            "bad_requests": 0,
            "errors": 0,
            "reloads": 0,
        }
        self._key: keys.SigningKey | None = None
        self._stamp: tuple[int, int] | None = None
        self._connections = 0

    # -- the key ---------------------------------------------------------------

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.key_dir / "current").stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def load(self) -> keys.SigningKey:
        """Load the active key (raises KeyStoreError / Pkcs11Error)."""
        stamp = self._current_stamp()
        key = keys.load_active(
            self.key_dir, machine_id_file=self.machine_id_file, pkcs11=self.pkcs11
        )
        self._key, self._stamp = key, stamp
        log.info("signer_key_loaded", key_id=key.key_id.hex()[:16], algorithm=key.algorithm)
        return key

    def key(self) -> keys.SigningKey:
        """The active key, reloaded when ``current`` changed (a rotation)."""
        if self._key is None or self._current_stamp() != self._stamp:
            try:
                return self.load()
            except (keys.KeyStoreError, Pkcs11Error, OSError) as exc:
                if self._key is None:
                    raise
                self._stamp = self._current_stamp()  # do not retry on every request
                log.error("signer_reload_failed", error=str(exc), keeps=self._key.key_id.hex()[:16])
            else:
                self.counters["reloads"] += 1
        return self._key

    # -- requests ---------------------------------------------------------------

    def handle(self, payload: bytes) -> bytes:
        """One request frame's payload in, one response frame out."""
        self.counters["requests"] += 1
        try:
            req = parse_request(payload)
        except ProtocolError as exc:
            self._bad(exc)
            return encode_error(exc.reason)
        try:
            key = self.key()
            if req.op == OP_SIGN:
                if req.key_id != key.key_id:
                    return encode_error("unknown_key")
                sigs = key.sign_digest(req.digest)
                self.counters["signed"] += 1
                return encode_ok(encode_signatures(sigs))
            if req.op == OP_KEY_INFO:
                info = KeyInfo(key.key_id, key.algorithm, key.public, _backend(key))
                doc = {**info.to_json(), "counters": dict(self.counters)}
                return encode_ok(json.dumps(doc).encode())
            assert req.op == OP_PUBLIC_KEYS
            doc = {
                "active": key.key_id.hex(),
                "keys": [k.to_text() for k in keys.public_keys(self.key_dir)],
                "rotations": [base64.b64encode(r).decode() for r in keys.rotations(self.key_dir)],
            }
            return encode_ok(json.dumps(doc).encode())
        except Exception as exc:  # a token or file failure must not kill the signer
            self.counters["errors"] += 1
            log.error("signer_request_failed", error=repr(exc))
            return encode_error("internal")

    def _bad(self, exc: ProtocolError) -> None:
        n = self.counters["bad_requests"] = self.counters["bad_requests"] + 1
        if n <= 10 or n % 1000 == 0:  # a flood must not flood the journal
            log.warning("signer_bad_request", reason=exc.reason, detail=str(exc), total=n)

    # -- the socket ---------------------------------------------------------------

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock: socket.socket = writer.get_extra_info("socket")
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in self.allowed:
                self.counters["refused_peers"] += 1
                log.warning("signer_refused_peer", uid=uid, pid=pid)
                writer.write(encode_error("forbidden"))
                return
            if self._connections >= MAX_CONNECTIONS:
                writer.write(encode_error("busy"))
                return
            self._connections += 1
            try:
                await self._serve_connection(reader, writer)
            finally:
                self._connections -= 1
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            head = await reader.readexactly(FRAME.size)
            (length,) = FRAME.unpack(head)
            try:
                check_length(length)
            except ProtocolError as exc:
                self.counters["requests"] += 1
                self._bad(exc)
                writer.write(encode_error(exc.reason))
                return  # the stream is out of step: close it
            payload = await asyncio.wait_for(reader.readexactly(length), FRAME_TIMEOUT_S)
            writer.write(self.handle(payload))
            await writer.drain()

    async def serve(self, socket_path: Path, stop: asyncio.Event) -> None:
        sock = bind_socket(socket_path)
        server = await asyncio.start_unix_server(self.client, sock=sock)
        log.info("signer_listening", socket=str(socket_path), allowed_uids=sorted(self.allowed))
        _sd_notify(b"READY=1")
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            with contextlib.suppress(OSError):
                os.unlink(socket_path)  # a quick syscall at shutdown, not worth a thread
            log.info("signer_stopped", **self.counters)


def _backend(key: keys.SigningKey) -> str:
    return "pkcs11" if getattr(key, "backend", "") == "pkcs11" else "sealed"


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0660 from the start."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # left by a killed signer
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _sd_notify(message: bytes) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.send(message)


def _not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: no core dumps, no ptrace or /proc/PID/mem by same-uid processes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)


def _uid(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"no such user {value!r}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cityedge-signer", description=__doc__.split("\n\n")[0])
    p.add_argument("--key-dir", type=Path, required=True)
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument(
        "--allowed-uid",
        type=_uid,
        action="append",
        default=[],
        help="uid or user name allowed to ask for signatures (repeat)",
    )
    p.add_argument("--pkcs11-module", help="PKCS#11 module (.so) of the token holding the key")
    p.add_argument("--token-label")
    p.add_argument("--pin-file", type=Path, help="file holding the token's user PIN")
    p.add_argument("--machine-id-file", type=Path, default=keys.MACHINE_ID, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="info", choices=sorted(logs.LEVELS))
    return p


def _pkcs11_config(args: argparse.Namespace) -> Pkcs11Config | None:
    if not args.pkcs11_module:
        return None
    if not args.token_label or not args.pin_file:
        raise keys.KeyStoreError("--pkcs11-module needs --token-label and --pin-file")
    try:
        mode = args.pin_file.stat().st_mode
        pin = args.pin_file.read_text().strip()
    except OSError as exc:
        raise keys.KeyStoreError(f"{args.pin_file}: {exc.strerror}") from exc
    if mode & 0o077:
        log.warning("signer_pin_file_readable_by_others", path=str(args.pin_file))
    return Pkcs11Config(args.pkcs11_module, args.token_label, pin)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    _not_dumpable()
    if not args.allowed_uid:
        log.error("signer_config_error", error="give --allowed-uid (the agent's uid or user)")
        return EXIT_CONFIG
    try:
        service = SignerService(
            args.key_dir,
            args.allowed_uid,
            machine_id_file=args.machine_id_file,
            pkcs11=_pkcs11_config(args),
        )
        service.load()
    except (keys.KeyStoreError, Pkcs11Error) as exc:
        log.error("signer_config_error", error=str(exc))
        return EXIT_CONFIG
    return asyncio.run(_run(service, args.socket))


async def _run(service: SignerService, socket_path: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: setattr(service, "_stamp", None))
    await service.serve(socket_path, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
