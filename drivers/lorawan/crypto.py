"""LoRaWAN 1.0.x cryptography: MICs, FRMPayload cipher, join accept, session keys.

Pure functions over bytes (LoRaWAN 1.0.2 sections 4.3.3, 4.4, 6.2.5, 6.2.6).
Multi-byte fields inside the B0 and A blocks are little-endian, as on the air:

* MIC of a data frame: ``AES-CMAC(NwkSKey, B0 | msg)[0:4]`` with
  ``B0 = 49 00000000 Dir DevAddr FCnt32 00 len(msg)``.
* FRMPayload: XOR with ``AES-ECB(K, A_i)``, ``A_i = 01 00000000 Dir DevAddr
  FCnt32 00 i`` for i = 1..k; K is the NwkSKey for FPort 0, else the AppSKey.
* Join MICs: ``AES-CMAC(AppKey, MHDR | fields)[0:4]``.
* A join accept is "encrypted" with an AES *decrypt* operation so that the
  device only needs AES encrypt to read it.
* ``NwkSKey = AES-ECB(AppKey, 01 | AppNonce | NetID | DevNonce | pad16)``,
  ``AppSKey`` likewise with ``02``.

Keys of the wrong length are a configuration error: they raise ``ValueError``,
never :class:`~cityedge.drivers.base.DecodeError`.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

KEY_SIZE = 16
MIC_SIZE = 4
BLOCK = 16


class SessionKeys(NamedTuple):
    """The two LoRaWAN 1.0.x session keys of a device."""

    nwk_s_key: bytes
    app_s_key: bytes


def check_key(key: bytes, name: str = "key") -> bytes:
    """Return ``key`` if it is a 16-byte AES-128 key, else raise ValueError."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be {KEY_SIZE} bytes")
    return bytes(key)


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """The full 16-byte AES-CMAC of ``data``."""
    mac = CMAC(algorithms.AES(check_key(key)))
    mac.update(data)
    return mac.finalize()


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128-ECB encrypt whole blocks."""
    enc = Cipher(algorithms.AES(check_key(key)), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """AES-128-ECB decrypt whole blocks."""
    dec = Cipher(algorithms.AES(check_key(key)), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def _block(tag: int, uplink: bool, dev_addr: int, fcnt32: int, last: int) -> bytes:
    """The 16-byte B0 (tag 0x49) or A_i (tag 0x01) block."""
    return (
        bytes((tag, 0, 0, 0, 0, 0 if uplink else 1))
        + (dev_addr & 0xFFFFFFFF).to_bytes(4, "little")
        + (fcnt32 & 0xFFFFFFFF).to_bytes(4, "little")
        + bytes((0, last & 0xFF))
    )


def data_mic(key: bytes, dev_addr: int, fcnt32: int, uplink: bool, msg: bytes) -> bytes:
    """The 4-byte MIC of a data frame; ``msg`` is MHDR | FHDR | FPort | FRMPayload."""
    return aes_cmac(key, _block(0x49, uplink, dev_addr, fcnt32, len(msg)) + msg)[:MIC_SIZE]


def verify_data_mic(
    key: bytes, dev_addr: int, fcnt32: int, uplink: bool, msg: bytes, mic: bytes
) -> bool:
    """True if ``mic`` is right for the frame; compared in constant time."""
    return hmac.compare_digest(data_mic(key, dev_addr, fcnt32, uplink, msg), mic)


def crypt_frm_payload(key: bytes, dev_addr: int, fcnt32: int, uplink: bool, data: bytes) -> bytes:
    """Encrypt or decrypt a FRMPayload (the keystream XOR is its own inverse)."""
    if not data:
        return b""
    nblocks = (len(data) + BLOCK - 1) // BLOCK
    blocks = b"".join(_block(0x01, uplink, dev_addr, fcnt32, i) for i in range(1, nblocks + 1))
    stream = aes_ecb_encrypt(key, blocks)[: len(data)]
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return mixed.to_bytes(len(data), "big")


def join_mic(app_key: bytes, msg: bytes) -> bytes:
    """The 4-byte MIC of a join request or (plain) join accept ``msg``."""
    return aes_cmac(app_key, msg)[:MIC_SIZE]


def verify_join_mic(app_key: bytes, msg: bytes, mic: bytes) -> bool:
    """True if ``mic`` is right for the join message; constant-time compare."""
    return hmac.compare_digest(join_mic(app_key, msg), mic)


def encrypt_join_accept(app_key: bytes, body_and_mic: bytes) -> bytes:
    """Encrypt a join accept's fields and MIC (16 or 32 bytes) as the network does."""
    return aes_ecb_decrypt(app_key, body_and_mic)


def decrypt_join_accept(app_key: bytes, encrypted: bytes) -> bytes:
    """Recover a join accept's fields and MIC (the device side's AES encrypt)."""
    return aes_ecb_encrypt(app_key, encrypted)


def derive_session_keys(app_key: bytes, app_nonce: int, net_id: int, dev_nonce: int) -> SessionKeys:
    """NwkSKey and AppSKey of an OTAA session (LoRaWAN 1.0.x section 6.2.5)."""
    tail = (
        (app_nonce & 0xFFFFFF).to_bytes(3, "little")
        + (net_id & 0xFFFFFF).to_bytes(3, "little")
        + (dev_nonce & 0xFFFF).to_bytes(2, "little")
    )
    pad = bytes(BLOCK - 1 - len(tail))
    keys = aes_ecb_encrypt(app_key, b"\x01" + tail + pad + b"\x02" + tail + pad)
    return SessionKeys(keys[:BLOCK], keys[BLOCK:])
