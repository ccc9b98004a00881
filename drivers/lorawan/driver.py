"""The LoRaWAN network-server side of the Semtech UDP packet forwarder (bus ``lorawan-udp``).

One UDP listener per bus. Per datagram: parse (GWMP v2), acknowledge
(PUSH_ACK / PULL_ACK with the same token), then each rxpk on its own, so
one bad rxpk does not lose the good ones: CRC ok, PHYPayload parsed, the
session found by DevAddr, the 32-bit FCnt inferred, the MIC checked with the
NwkSKey, and only after a good MIC the duplicate and replay checks (MIC
first, or forged frames could push the counter). An accepted counter is
persisted at once (:mod:`.sessions`), so a restart does not reopen replay.

The same uplink heard by several gateways is kept once: copies are gathered
for ``dedupe_s`` (0.2 s) and the frame is decoded with the radio metadata of
the copy with the best RSSI (then SNR). Its FRMPayload is decrypted with the
AppSKey, decoded by the profile's codec (:mod:`.payload`) and mapped through
the profile's ``[[fields]]``. Confirmed uplinks are acknowledged in RX1.

OTAA: a join request is checked with the AppKey, a DevNonce already used is
refused, the join accept goes back in a PULL_RESP to the address of the
gateway's last PULL_DATA (5 s after the request, EU868 JOIN_ACCEPT_DELAY1),
and the new session (keys, DevAddr, counters reset) is persisted.

EU868 only (:mod:`.region`): a frame heard outside 863-870 MHz is refused
(``wrong_region``), never answered on a channel another region forbids.

Every bad input is a named, counted, logged rejection; nothing a gateway
sends can stop the listener. Ready readings wait in a bounded queue
(``QUEUE_MAX`` uplinks); when it is full the newest uplink is dropped and
counted (``queue_full``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from cityedge.backoff import Backoff
from cityedge.config.model import BusConfig, DeviceConfig
from cityedge.drivers.base import DecodeError, ReadingSink, Source, newly_unreachable, supervise
from cityedge.drivers.lorawan import crypto, fcnt, join, mac, phy, region, resets, semtech, values
from cityedge.drivers.lorawan.devices import Device, Pending, make_device
from cityedge.drivers.lorawan.forwarders import DEFAULT_SILENCE_S, SILENT_HINT, ForwarderWatch
from cityedge.drivers.lorawan.payload import decode_payload
from cityedge.drivers.lorawan.ratelimit import LogLimiter
from cityedge.drivers.lorawan.sessions import MAX_DEV_NONCES, SessionStore
from cityedge.readings import Reading, utc_now
from cityedge.sources import SourceContext
from cityedge.tasks import cancel_and_wait

QUEUE_MAX = 1024
RECENT_MAX = 4096  # accepted (DevAddr, FCnt) kept to tell a late copy from a replay
RESET_HINT = (
    "relaxed_fcnt took a counter that went back as a device restart; "
    "if the device did not restart, this may be a replay (docs/profile-sources-lorawan.md)"
)
Addr = tuple[Any, ...]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, source: LoRaWANSource, lost: asyncio.Future[str]) -> None:
        self.source = source
        self.lost = lost

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.source.handle_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.source.reject("socket_error", str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(str(exc) if exc else "closed")


class LoRaWANSource(Source):
    """The :class:`~cityedge.drivers.base.Source` of one ``lorawan-udp`` bus."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[tuple[DeviceConfig, str]],
        store: SessionStore,
        *,
        dedupe_s: float = 0.2,
        duplicate_window_s: float = 10.0,
        clock_ok: Callable[[], bool] | None = None,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
    ) -> None:
        opts = bus.options
        self.bus = bus
        self.name = f"lorawan:{bus.name}"
        self.bind = str(opts.get("bind", "127.0.0.1"))
        self.port = int(opts.get("port", 1700))
        self.max_datagram = int(opts.get("max_datagram", semtech.MAX_DATAGRAM))
        self.net_id = int(str(opts.get("net_id", "000000")), 16)
        self.rx1_delay_s = int(opts.get("rx1_delay_s", 1))
        self._watch = ForwarderWatch(float(opts.get("silence_s", DEFAULT_SILENCE_S)))
        self.store = store
        self.dedupe_s = dedupe_s
        self.duplicate_window_s = duplicate_window_s
        self._clock_ok = clock_ok
        self._log = structlog.get_logger().bind(bus=bus.name, driver="lorawan")
        self._devices: dict[str, Device] = {}
        self._by_eui: dict[str, Device] = {}
        self._by_addr: dict[int, list[Device]] = {}
        for config, cell in devices:
            dev = self._device(config, cell)
            self._devices[config.id] = dev
            self._by_eui[dev.session.dev_eui] = dev
        self._reindex()
        self._pending: dict[tuple[str, int, int], Pending] = {}
        self._recent: OrderedDict[tuple[int, int], tuple[bytes, float]] = OrderedDict()
        self._ready: asyncio.Queue[list[Reading]] = asyncio.Queue(QUEUE_MAX)
        self._transport: asyncio.DatagramTransport | None = None
        self._reopen = Backoff(base_s=reopen_min_s, cap_s=reopen_max_s)
        self.connected = False
        self.rejected: dict[str, int] = dict(store.rejected)
        self._limiter = LogLimiter()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "datagrams",
                "push_data",
                "pull_data",
                "tx_ack",
                "rxpk",
                "uplinks",
                "joins",
                "duplicates",
                "downlinks",
                "readings",
            ),
            0,
        )

    # -- setup -------------------------------------------------------------

    def _device(self, config: DeviceConfig, cell: str) -> Device:
        dev_eui = str(config.options["dev_eui"]).lower()
        log = self._log.bind(device=config.id, dev_eui=dev_eui)
        return make_device(config, cell, self.store.load(dev_eui), log)

    def _reindex(self) -> None:
        self._by_addr = {}
        for dev in self._devices.values():
            if dev.session.active and dev.session.dev_addr is not None:
                self._by_addr.setdefault(dev.session.dev_addr, []).append(dev)

    # -- running -----------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Listen until cancelled; reopen the socket with backoff if it is lost."""
        pump = asyncio.create_task(self._pump(sink))
        watch = asyncio.create_task(self._watch_forwarders())
        try:
            await supervise(self._serve, self._reopen, self._on_lost)
        finally:
            self.connected = False
            try:
                await cancel_and_wait([pump, watch])
            finally:
                self._drop_pending_and_close()

    def _drop_pending_and_close(self) -> None:
        for pending in self._pending.values():
            if pending.handle is not None:
                pending.handle.cancel()
        if self._pending:
            self._count("dropped_on_shutdown", len(self._pending))
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _on_lost(self, reason: str) -> None:
        self.connected = False
        self._log.warning("listener_lost", error=reason)

    async def _serve(self) -> str:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self, lost), local_addr=(self.bind, self.port)
            )
        except OSError as exc:
            self._log.warning("listener_open_failed", error=str(exc))
            return str(exc)
        self._transport = transport
        self.connected = True
        self._watch.heard_at = time.monotonic()  # silence is counted from here
        self._reopen.reset()
        self._log.info(
            "listener_opened", bind=self.bind, port=self.port, devices=len(self._devices)
        )
        try:
            return await lost
        finally:
            transport.close()
            self._transport = None

    async def _watch_forwarders(self) -> None:
        """Report the bus's devices unreachable once when every forwarder has gone quiet."""
        while True:
            await asyncio.sleep(self._watch.silence_s / 4)
            # Judged only while listening: a socket of ours that is down is not the
            # forwarder's silence (listener_open_failed says what it is).
            if not self.connected or not self._watch.went_silent():
                continue
            self._log.warning(
                "forwarder_silent", silent_s=round(self._watch.quiet_s()), hint=SILENT_HINT
            )
            bad = newly_unreachable(self._devices.values())
            if bad:
                await self._ready.put(bad)

    async def _pump(self, sink: ReadingSink) -> None:
        while True:
            readings = await self._ready.get()
            if self._clock_ok is not None and not self._clock_ok():
                readings = [dataclasses.replace(r, time_ok=False) for r in readings]
            await sink(readings)

    # -- counting ----------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.rejected[name] = self.rejected.get(name, 0) + n

    def reject(self, reason: str, detail: str = "", dev: Device | None = None, **kw: Any) -> None:
        """Count and log one rejected input."""
        self._count(reason)
        if dev is not None:
            dev.error(reason, detail)
        quiet = self._limiter.allow(reason)
        if quiet is None:
            return
        log = dev.log if dev is not None else self._log
        log.info("frame_rejected", reason=reason, error=detail[:120], suppressed=quiet, **kw)

    def _send(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # -- datagrams ---------------------------------------------------------

    def handle_datagram(self, data: bytes, addr: Addr) -> None:
        """Everything a gateway sends arrives here; nothing raises out of it."""
        self.counters["datagrams"] += 1
        try:
            self._datagram(data, addr)
        except Exception as exc:  # a bug must not stop the listener
            self._log.exception("datagram_failed")
            self.reject("internal_error", repr(exc))

    def _datagram(self, data: bytes, addr: Addr) -> None:
        items: Sequence[Any]
        try:
            msg = semtech.parse_datagram(data, self.max_datagram)
            items = msg.rxpk if isinstance(msg, semtech.PushData) else ()
        except DecodeError as exc:
            if exc.reason not in ("bad_rxpk", "bad_base64", "size_mismatch"):
                self.reject(exc.reason, str(exc), peer=str(addr[0]))
                return
            # The envelope is sound (JSON parsed, an object): take the rxpk one by one.
            body = json.loads(data[12:].rstrip(b"\x00"))
            raw = body.get("rxpk")
            if not isinstance(raw, list):
                self.reject(exc.reason, str(exc), peer=str(addr[0]))
                return
            msg = semtech.PushData(
                int.from_bytes(data[1:3], "big"), data[4:12].hex().upper(), (), None
            )
            items = raw
        gw, back = self._watch.heard(msg.gateway_eui)
        if back:
            self._log.info("forwarder_back", gateway=msg.gateway_eui)
        if isinstance(msg, semtech.PullData):
            self.counters["pull_data"] += 1
            gw["pull"] += 1
            gw["addr"] = addr
            self._send(semtech.build_pull_ack(msg.token), addr)
        elif isinstance(msg, semtech.TxAck):
            self.counters["tx_ack"] += 1
            if msg.error not in (None, "NONE"):
                self.reject("tx_" + str(msg.error).lower()[:32], gateway=msg.gateway_eui)
        else:
            self.counters["push_data"] += 1
            gw["push"] += 1
            self._send(semtech.build_push_ack(msg.token), addr)
            for item in items:
                self._rxpk(msg.gateway_eui, item)

    def _rxpk(self, gateway: str, item: Any) -> None:
        self.counters["rxpk"] += 1
        try:
            rx = item if isinstance(item, semtech.RxPacket) else semtech.parse_rxpk(item)
        except DecodeError as exc:
            self.reject(exc.reason, str(exc), gateway=gateway)
            return
        if not rx.crc_ok:
            self.reject("crc_bad", f"stat {rx.stat}", gateway=gateway)
            return
        if not region.in_band(rx.freq):  # never answered: RX1 would be an illegal channel
            self.reject("wrong_region", region.out_of_band(rx.freq), gateway=gateway)
            return
        try:
            frame = phy.parse_phy(rx.data)
        except DecodeError as exc:
            self.reject("phy_" + exc.reason, str(exc), gateway=gateway)
            return
        if isinstance(frame, phy.JoinRequest):
            self._join_request(gateway, rx, frame)
        elif isinstance(frame, phy.DataFrame) and frame.uplink:
            self._uplink(gateway, rx, frame)
        else:
            self.reject("not_uplink", type(frame).__name__, gateway=gateway)

    # -- uplinks -----------------------------------------------------------

    def _verify(self, frame: phy.DataFrame) -> tuple[Device, int, bool] | None:
        """The device whose NwkSKey signs the frame, the 32-bit FCnt, and a counter reset."""
        return resets.verify(self._by_addr.get(frame.dev_addr, ()), frame, self._is_copy)

    def _uplink(self, gateway: str, rx: semtech.RxPacket, frame: phy.DataFrame) -> None:
        addr_hex = frame.dev_addr_hex
        if frame.dev_addr not in self._by_addr:
            self.reject("unknown_dev_addr", dev_addr=addr_hex, gateway=gateway)
            return
        found = self._verify(frame)
        if found is None:
            devs = self._by_addr[frame.dev_addr]
            self.reject(
                "bad_mic",
                f"DevAddr {addr_hex} FCnt16 {frame.fcnt16}",
                devs[0] if len(devs) == 1 else None,
                gateway=gateway,
            )
            return
        dev, fcnt32, reset = found
        key = ("up", frame.dev_addr, fcnt32)
        if self._is_copy(frame.dev_addr, fcnt32, rx.data):  # another gateway's, or a retry
            pending = self._pending.get(key)
            if pending is not None:
                pending.copies.append((gateway, rx))
            self.counters["duplicates"] += 1
            dev.count("duplicates")
            return
        last = dev.session.fcnt_up
        # A relaxed device's frames in the restart window are known by their bytes:
        # one accepted before (this power cycle or an earlier one) is a replay,
        # whether it comes as a restart or as the next frame.
        if dev.relaxed and fcnt32 < resets.RESET_WINDOW and resets.seen(dev.session, rx.data):
            self.reject("replay", f"FCnt {fcnt32}: a frame accepted before", dev)
            return
        if not reset and fcnt.is_replay(fcnt32, last):
            self.reject("replay", f"FCnt {fcnt32} <= {last}", dev, gateway=gateway)
            return
        if not reset and fcnt.is_gap_too_large(fcnt32, last):
            self.reject("fcnt_gap", f"FCnt {fcnt32} after {last}", dev, gateway=gateway)
            return
        if reset:
            dev.count("fcnt_resets")
            dev.log.warning("fcnt_reset_accepted", fcnt=fcnt32, last=last, hint=RESET_HINT)
        dev.session.fcnt_up = fcnt32
        if dev.relaxed:
            resets.remember(dev.session, fcnt32, rx.data)
        self.store.save(dev.session)
        self._remember(frame.dev_addr, fcnt32, rx.data)
        self._count_macs(dev, frame.mac_commands())
        self._hold(key, Pending(dev, frame, rx.data, fcnt32, utc_now(), [(gateway, rx)]))

    def _is_copy(self, dev_addr: int, fcnt32: int, data: bytes) -> bool:
        """The same bytes as a frame accepted less than ``duplicate_window_s`` ago."""
        seen = self._recent.get((dev_addr, fcnt32))
        return (
            seen is not None
            and seen[0] == data
            and time.monotonic() - seen[1] < self.duplicate_window_s
        )

    def _remember(self, dev_addr: int, fcnt32: int, data: bytes) -> None:
        self._recent[(dev_addr, fcnt32)] = (data, time.monotonic())
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _count_macs(self, dev: Device, macs: phy.MacCommands) -> None:
        counts = dev.stats.setdefault("mac_commands", {})
        for cmd in macs.commands:
            counts[cmd.name] = counts.get(cmd.name, 0) + 1
        if macs.unparsed:
            dev.count("mac_unparsed_bytes", macs.unparsed)

    def _hold(self, key: tuple[str, int, int], pending: Pending) -> None:
        self._pending[key] = pending
        if self.dedupe_s <= 0:
            self._release(key)
        else:
            loop = asyncio.get_running_loop()
            pending.handle = loop.call_later(self.dedupe_s, self._release, key)

    def _release(self, key: tuple[str, int, int]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        try:
            if isinstance(pending.frame, phy.JoinRequest):
                self._answer_join(pending, pending.frame)
            else:
                self._deliver(pending, pending.frame)
        except Exception as exc:  # a bug must not stop the listener
            self._log.exception("release_failed")
            self.reject("internal_error", repr(exc), pending.device)

    def _deliver(self, pending: Pending, frame: phy.DataFrame) -> None:
        dev, s = pending.device, pending.device.session
        gateway, rx = pending.best()
        self.counters["uplinks"] += 1
        dev.count("frames")
        dev.down = False
        dev.stats.update(last_rssi=rx.rssi, last_snr=rx.lsnr, last_gateway=gateway)
        macs = list(frame.mac_commands().commands)
        plain = b""
        if frame.fport is not None:
            assert s.nwk_s_key is not None and s.app_s_key is not None
            key = s.nwk_s_key if frame.fport == 0 else s.app_s_key
            plain = crypto.crypt_frm_payload(
                key, frame.dev_addr, pending.fcnt32, True, frame.frm_payload
            )
        if frame.fport == 0:
            in_payload = phy.parse_mac_commands(plain, True)
            self._count_macs(dev, in_payload)
            macs += in_payload.commands
        self._reply(pending, frame, macs, gateway, rx)
        if frame.fport in (None, 0):
            return
        try:
            decoded = decode_payload(dev.config.profile.codec, frame.fport, plain)
        except DecodeError as exc:
            self.reject("payload_" + exc.reason, str(exc), dev, fport=frame.fport)
            return
        meta = {
            "rssi": rx.rssi,
            "snr": rx.lsnr,
            "freq": rx.freq,
            "datr": rx.datr,
            "gateway": gateway,
            "gateways": len({g for g, _ in pending.copies}),
            "fcnt": pending.fcnt32,
            "fport": frame.fport,
            "dev_addr": frame.dev_addr_hex,
        }
        readings, bad = values.readings(dev, decoded, pending.received, meta)
        for reason, detail in bad:
            self.reject(reason, detail, dev)
        if not readings:
            return
        try:
            self._ready.put_nowait(readings)
        except asyncio.QueueFull:
            self.reject("queue_full", f"{QUEUE_MAX} uplinks waiting", dev)
            return
        self.counters["readings"] += len(readings)

    def _reply(
        self,
        pending: Pending,
        frame: phy.DataFrame,
        macs: list[phy.MacCommand],
        gateway: str,
        rx: semtech.RxPacket,
    ) -> None:
        """One RX1 downlink carrying the ACK of a confirmed uplink and MAC answers, if any."""
        dev, s = pending.device, pending.device.session
        fopts, skipped = mac.answers(
            macs,
            snr=rx.lsnr,
            datr=rx.datr,
            gateways=len({g for g, _ in pending.copies}),
            received=pending.received,
            gps_ms=rx.tmms,
            clock_ok=self._clock_ok is None or self._clock_ok(),
        )
        for reason in skipped:  # the frame itself was fine: a count, not a rejection
            dev.count(reason)
        if not fopts and not frame.confirmed:
            return
        assert s.nwk_s_key is not None and s.app_s_key is not None and s.dev_addr is not None
        down = phy.build_data_downlink(
            s.dev_addr, s.fcnt_down, None, b"", s.nwk_s_key, s.app_s_key,
            fopts=fopts, ack=frame.confirmed,
        )  # fmt: skip
        if self._downlink(dev, gateway, rx, down, self.rx1_delay_s * 1_000_000):
            s.fcnt_down += 1
            self.store.save(s)
            if fopts:
                dev.count("mac_answers")

    def _downlink(
        self, dev: Device, gateway: str, rx: semtech.RxPacket, frame: bytes, delay_us: int
    ) -> bool:
        addr = self._watch.gateways.get(gateway, {}).get("addr")
        if addr is None:
            self.reject("no_downlink_path", f"no PULL_DATA from gateway {gateway}", dev)
            return False
        txpk = semtech.txpk(
            frame, freq=rx.freq, datr=str(rx.datr), tmst=rx.tmst + delay_us, codr=rx.codr or "4/5"
        )
        self._send(semtech.build_pull_resp(secrets.randbits(16), txpk), addr)
        self.counters["downlinks"] += 1
        return True

    # -- joins -------------------------------------------------------------

    def _join_request(self, gateway: str, rx: semtech.RxPacket, frame: phy.JoinRequest) -> None:
        dev = self._by_eui.get(frame.dev_eui.lower())
        if dev is None or dev.app_key is None:
            self.reject("unknown_dev_eui", dev_eui=frame.dev_eui, gateway=gateway)
            return
        if dev.join_eui is not None and dev.join_eui != frame.join_eui:
            self.reject("join_eui_mismatch", frame.join_eui, dev)
            return
        if not join.verify_join_request(frame, dev.app_key):
            self.reject("join_bad_mic", f"DevNonce {frame.dev_nonce}", dev, gateway=gateway)
            return
        key = ("join", int(frame.dev_eui, 16), frame.dev_nonce)
        pending = self._pending.get(key)
        if pending is not None:
            if pending.phy == rx.data:
                pending.copies.append((gateway, rx))
            self.counters["duplicates"] += 1
            dev.count("duplicates")
            return
        if frame.dev_nonce in dev.session.dev_nonces:
            self.reject("devnonce_reused", f"DevNonce {frame.dev_nonce}", dev, gateway=gateway)
            return
        dev.session.dev_nonces.append(frame.dev_nonce)
        del dev.session.dev_nonces[:-MAX_DEV_NONCES]
        self.store.save(dev.session)
        self._hold(key, Pending(dev, frame, rx.data, 0, utc_now(), [(gateway, rx)]))

    def _new_dev_addr(self) -> int:
        """A free DevAddr of a type-0 NetID: NwkID (6 bits) then a random NwkAddr (25 bits)."""
        while True:
            addr = ((self.net_id & 0x3F) << 25) | secrets.randbits(25)
            if addr not in self._by_addr:
                return addr

    def _answer_join(self, pending: Pending, frame: phy.JoinRequest) -> None:
        dev = pending.device
        assert dev.app_key is not None
        accept = join.JoinAccept(
            app_nonce=secrets.randbits(24),
            net_id=self.net_id,
            dev_addr=self._new_dev_addr(),
            rx_delay=self.rx1_delay_s,
        )
        phy_accept, keys = join.answer_join_request(frame, dev.app_key, accept)
        gateway, rx = pending.best()
        if not self._downlink(dev, gateway, rx, phy_accept, region.JOIN_ACCEPT_DELAY1_US):
            return
        s = dev.session
        s.dev_addr, s.nwk_s_key, s.app_s_key = accept.dev_addr, keys.nwk_s_key, keys.app_s_key
        s.fcnt_up, s.fcnt_down, s.joined = None, 0, True
        s.reset_seen.clear()  # frames of the old keys never verify again
        self.store.save(s)
        self._reindex()
        self.counters["joins"] += 1
        dev.count("joins")
        dev.log.info(
            "device_joined",
            dev_addr=f"{accept.dev_addr:08X}",
            gateway=gateway,
            dev_nonce=frame.dev_nonce,
        )

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, object]:
        devices: dict[str, object] = {}
        for dev in self._devices.values():
            s = dev.session
            info: dict[str, Any] = dict(
                frames=0, errors_total=0, last_error=None, unmapped=0, duplicates=0, joins=0
            )
            info.update(dev.stats)
            info.update(
                state="unreachable" if dev.down else ("ok" if s.active else "waiting_join"),
                dev_eui=s.dev_eui,
                dev_addr=None if s.dev_addr is None else f"{s.dev_addr:08X}",
                fcnt_up=s.fcnt_up,
                fcnt_down=s.fcnt_down,
            )
            devices[dev.config.id] = info
        return {
            "bus": self.bus.name,
            "type": self.bus.type,
            "connected": self.connected,
            **self.counters,
            **self._watch.status(),
            "state_writes": self.store.writes,
            "state_write_errors": self.store.write_errors,
            "devices": devices,
            "rejected": dict(self.rejected),
        }


def build_source(bus: BusConfig, devices: Sequence[DeviceConfig], ctx: SourceContext) -> Source:
    """The source of a ``lorawan-udp`` bus; its sessions live in ``ctx.state_dir``.

    The file is ``lorawan-<bus name>.json``, so two LoRaWAN buses never share one;
    another such file holding sessions of this bus's devices (a renamed bus) is
    warned about and counted.
    """
    store = SessionStore(ctx.state_dir / f"lorawan-{bus.name}.json")
    euis = [str(d.options["dev_eui"]) for d in devices]
    store.check_other_files(bus.name, euis, configured=ctx.bus_names)
    mine = [(d, ctx.cell_for(d)) for d in devices]
    return LoRaWANSource(bus, mine, store, clock_ok=ctx.clock_ok)
