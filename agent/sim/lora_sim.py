"""A Semtech UDP packet forwarder emulator, for the demo, tests and benchmarks.

:class:`ForwarderEmulator` is the gateway side of GWMP v2 on loopback: it
sends PUSH_DATA with rxpk carrying real LoRaWAN frames (encrypted and signed
by :func:`cityedge.drivers.lorawan.phy.build_data_uplink`), keeps PULL_DATA
keep-alives going so the server has a downlink path, collects PUSH_ACK /
PULL_ACK tokens and PULL_RESP downlinks, and answers each PULL_RESP with a
TX_ACK as a real forwarder does. :func:`encode_lpp` builds Cayenne LPP
payloads for simulated sensors.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import random
from types import TracebackType
from typing import Any, Self

from cityedge.drivers.base import DecodeError
from cityedge.drivers.lorawan import cayenne, join, phy, semtech
from cityedge.drivers.lorawan.crypto import SessionKeys

DEFAULT_EUI = "AA555A0000000001"


class _Client(asyncio.DatagramProtocol):
    def __init__(self, emulator: ForwarderEmulator) -> None:
        self.emulator = emulator

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.emulator._received(data)

    def error_received(self, exc: Exception) -> None:
        self.emulator.errors += 1


class ForwarderEmulator:
    """One gateway's packet forwarder, talking to ``server`` over UDP."""

    def __init__(
        self,
        server: tuple[str, int],
        gateway_eui: str = DEFAULT_EUI,
        *,
        keepalive_s: float = 5.0,
        freq: float = 868.1,
        datr: str = "SF7BW125",
    ) -> None:
        self.server = server
        self.gateway_eui = gateway_eui.upper()
        self.keepalive_s = keepalive_s
        self.freq = freq
        self.datr = datr
        self.push_acks: set[int] = set()
        self.pull_acks: set[int] = set()
        self.pull_resps: asyncio.Queue[semtech.PullResp] = asyncio.Queue(256)
        self.errors = 0
        self.bad_downstream = 0
        self._tokens = itertools.count(random.randrange(0x10000))
        self._tmst = random.randrange(1 << 31)
        self._transport: asyncio.DatagramTransport | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._acked = asyncio.Event()
        self._pushed = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, wait_s: float = 2.0) -> None:
        """Connect, send a PULL_DATA and wait (up to ``wait_s``) for its PULL_ACK."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Client(self), remote_addr=self.server
        )
        self._keepalive = asyncio.create_task(self._keep_alive())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acked.wait(), wait_s)

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
            self._keepalive = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _keep_alive(self) -> None:
        while True:
            self.pull_data()
            await asyncio.sleep(self.keepalive_s)

    # -- sending -------------------------------------------------------------

    def _token(self) -> int:
        return next(self._tokens) & 0xFFFF

    def send_raw(self, datagram: bytes) -> None:
        """Send any bytes to the server (for rejection tests)."""
        if self._transport is None:
            raise RuntimeError("emulator not started")
        self._transport.sendto(datagram)

    def pull_data(self) -> int:
        token = self._token()
        self.send_raw(semtech.build_pull_data(token, self.gateway_eui))
        return token

    def rx_packet(self, phy_payload: bytes, rssi: int = -60, snr: float = 7.5) -> semtech.RxPacket:
        """An rxpk as the concentrator reports it, stamped with the emulated counter."""
        self._tmst = (self._tmst + random.randrange(1_000_000, 5_000_000)) & 0xFFFFFFFF
        return semtech.RxPacket(
            tmst=self._tmst,
            freq=self.freq,
            chan=0,
            rfch=0,
            stat=1,
            modu="LORA",
            datr=self.datr,
            codr="4/5",
            rssi=rssi,
            lsnr=snr,
            size=len(phy_payload),
            data=phy_payload,
        )

    def push(self, packets: list[semtech.RxPacket]) -> int:
        """Send a PUSH_DATA with these rxpk; returns its token."""
        token = self._token()
        self.send_raw(semtech.build_push_data(token, self.gateway_eui, packets))
        return token

    def send_phy(self, phy_payload: bytes, rssi: int = -60, snr: float = 7.5) -> int:
        return self.push([self.rx_packet(phy_payload, rssi, snr)])

    def send_uplink(
        self,
        dev_addr: int | str,
        fcnt: int,
        fport: int | None,
        payload: bytes,
        nwk_s_key: bytes,
        app_s_key: bytes,
        rssi: int = -60,
        snr: float = 7.5,
        *,
        confirmed: bool = False,
        fopts: bytes = b"",
    ) -> int:
        """Encrypt, sign and push one uplink; returns the PUSH_DATA token."""
        frame = phy.build_data_uplink(
            dev_addr, fcnt, fport, payload, nwk_s_key, app_s_key, confirmed, fopts
        )
        return self.send_phy(frame, rssi, snr)

    def send_join(
        self,
        join_eui: str,
        dev_eui: str,
        dev_nonce: int,
        app_key: bytes,
        rssi: int = -60,
        snr: float = 7.5,
    ) -> int:
        """Push a signed join request; returns the PUSH_DATA token."""
        return self.send_phy(
            join.build_join_request(join_eui, dev_eui, dev_nonce, app_key), rssi, snr
        )

    # -- receiving -----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            msg = semtech.parse_downstream(data)
        except DecodeError:
            self.bad_downstream += 1
            return
        if isinstance(msg, semtech.PullResp):
            with contextlib.suppress(asyncio.QueueFull):
                self.pull_resps.put_nowait(msg)
            if self._transport is not None:
                self._transport.sendto(semtech.build_tx_ack(msg.token, self.gateway_eui))
        elif msg.ident == semtech.Ident.PUSH_ACK:
            self.push_acks.add(msg.token)
            self._pushed.set()
        else:
            self.pull_acks.add(msg.token)
            self._acked.set()

    async def wait_push_ack(self, token: int, within_s: float = 2.0) -> bool:
        """True once the server acknowledged the PUSH_DATA ``token``."""
        async with asyncio.timeout(within_s):
            while token not in self.push_acks:
                self._pushed.clear()
                await self._pushed.wait()
        return True

    async def next_downlink(self, within_s: float = 2.0) -> semtech.PullResp:
        return await asyncio.wait_for(self.pull_resps.get(), within_s)

    async def join(
        self,
        join_eui: str,
        dev_eui: str,
        dev_nonce: int,
        app_key: bytes,
        within_s: float = 3.0,
    ) -> tuple[join.JoinAccept, SessionKeys]:
        """Join as a device would: request, JoinAccept from a PULL_RESP, session keys."""
        self.send_join(join_eui, dev_eui, dev_nonce, app_key)
        resp = await self.next_downlink(within_s)
        accept = join.open_join_accept(base64.b64decode(resp.txpk["data"]), app_key)
        keys = join.derive_session_keys(app_key, accept.app_nonce, accept.net_id, dev_nonce)
        return accept, keys


# -- Cayenne LPP for simulated sensors ----------------------------------------

_LPP_CODES = {kind.name: code for code, kind in cayenne.TYPES.items()}


def encode_lpp(records: list[tuple[int, str, float | dict[str, float]]]) -> bytes:
    """Cayenne LPP bytes for ``(channel, type name, value)`` records.

    Multi-value types (accelerometer, gyrometer, gps) take a dict of their
    parts. Values are rounded to the type's resolution; out of range raises
    ValueError (OverflowError from int.to_bytes).
    """
    out = bytearray()
    for channel, name, value in records:
        code = _LPP_CODES[name]
        out += bytes((channel, code))
        for part in cayenne.TYPES[code].fields:
            number = value[part.key] if isinstance(value, dict) else value
            raw = round(number * part.divisor)
            out += raw.to_bytes(part.size, "big", signed=part.signed)
    return bytes(out)


def lpp_temperature(channel: int, celsius: float) -> bytes:
    return encode_lpp([(channel, "temperature", celsius)])


def lpp_humidity(channel: int, percent: float) -> bytes:
    return encode_lpp([(channel, "humidity", percent)])
