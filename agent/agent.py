"""The agent: wires sources -> writer -> outbox -> sender, and supervises them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import hashlib
import json
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from cityedge import __version__
from cityedge.alert_store import AlertStore
from cityedge.alerting import AlertEngine, rules_from
from cityedge.anomaly_runtime import AnomalyRuntime
from cityedge.attest import build_record, sign_record
from cityedge.clock import ClockState
from cityedge.config.model import BusConfig, Config, DeviceConfig
from cityedge.control import ControlServer
from cityedge.drivers.base import Source
from cityedge.ops import Operations
from cityedge.outbox import Outbox
from cityedge.pipeline import Writer
from cityedge.readings import Priority, Quality, Reading
from cityedge.remote import RemoteCommands
from cityedge.signing.protocol import SignerError
from cityedge.signing.signer_client import SyncSignerClient
from cityedge.sources import SourceContext, build_sources, factory
from cityedge.tasks import OUTER_EVERY_S, cancel_and_wait
from cityedge.uplink.link import Link
from cityedge.uplink.sealing import UplinkSealer
from cityedge.uplink.sender import Sender, UplinkStats

log = structlog.get_logger("cityedge.agent")
LAST_VALUES_PER_DEVICE = 1000  # points kept for `cityedge read`, whatever a device sends


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        summary_every_s: float = 60.0,
        stop_timeout_s: float = 0.0,
        stop_early: Sequence[int] = (),
    ) -> None:
        self.config = config
        self._stop_early = stop_early  # signals caught before the loop ran
        self.stop_timeout_s = stop_timeout_s
        self.summary_every_s = summary_every_s
        self.started = time.time()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        storage = config.storage
        self.outbox = Outbox(
            storage.path, max_bytes=storage.max_bytes, durability=storage.durability
        )
        self.writer = Writer(self.outbox, self.executor)
        state_dir = storage.state_root
        self.state_dir = state_dir
        self.profile_updates = storage.profile_updates  # installed by signed commands
        # The last reading of every point, per device (LAST_VALUES_PER_DEVICE at most).
        self.last_values: dict[str, dict[str, Reading]] = {}
        self.alert_store = AlertStore(state_dir / "alerts.json", config.alerts.resend_s)
        self.alert_store_failures = 0
        self.alerts = AlertEngine(rules_from(config), config.site.gateway_id)
        self.anomaly = AnomalyRuntime(config, state_dir, self.alerts, self.raise_alerts)
        self.signer = (
            SyncSignerClient(config.signing.socket, timeout_s=config.signing.timeout_s)
            if config.signing.enabled
            else None
        )
        self.remote = RemoteCommands(self)
        self.commands = self.remote.router
        self._command_tasks = self.remote.tasks
        # Totals since start, carried by every sender (a reload, a drill's resume).
        self.uplink_stats = UplinkStats()
        self.sender = self._make_sender(config)
        self.clock = ClockState()
        self.source_ctx = SourceContext(
            config.site, state_dir, clock_ok=self.clock.ok, bus_names=frozenset(config.buses)
        )
        self.silenced: set[str] = set()  # devices a drill made the agent deaf to
        self._uplink_paused = False
        self.sources = build_sources(config, self.source_ctx)
        self._running: dict[str, tuple[Source, asyncio.Task[None]]] = {}
        self.last_reload: dict[str, Any] | None = None
        self.attested_at: float | None = None
        self._config_stamp = _stamp(config.source)
        self.ops = Operations(self, self.clock)
        self.control = ControlServer(
            state_dir / "control.sock",
            {
                "status": self._status,
                "reload": self._control_reload,
                "read": self._control_read,
                **self.ops.handlers(),
            },
        )
        self._stop = asyncio.Event()

    def _make_sender(self, config: Config) -> Sender:
        seal = None if self.signer is None else UplinkSealer(self.signer, config.site.gateway_id)
        self.sealer = seal
        sender = Sender(
            config.uplink,
            self.outbox,
            self.executor,
            gateway_id=config.site.gateway_id,
            site_id=config.site.id,
            on_message=self.remote.on_downlink,
            seal=seal,
            stats=self.uplink_stats,
        )
        sender.subscriptions = (sender.topic("cmd"),)
        sender.on_connect.append(self._birth)
        sender.on_new_key = self._birth  # a rotated key: keys and attestation first
        return sender

    async def _birth(self, link: Link) -> None:
        """On every connection: the public keys and the signed attestation, retained."""
        if self.signer is None:
            return
        signer = self.signer
        try:
            keys = await asyncio.to_thread(signer.public_keys)
            record = build_record(
                self.config,
                public_keys=list(keys.get("keys", [])),
                models=await asyncio.to_thread(self.anomaly.hashes),
                time_ok=self.clock.ok(),
            )
            signed = await asyncio.to_thread(sign_record, record, signer)
        except SignerError as exc:
            log.warning("attestation_deferred", reason=exc.reason)
            return
        base = (
            f"{self.config.uplink.topic_prefix}/{self.config.site.id}/{self.config.site.gateway_id}"
        )
        link.publish(f"{base}/keys", json.dumps(keys).encode(), retain=True)
        link.publish(f"{base}/attestation", json.dumps(signed).encode(), retain=True)
        self.attested_at = time.time()
        log.info("attestation_published", code_sha256=record["code_sha256"][:16])

    def stop(self) -> None:
        if not self._stop.is_set() and self.stop_timeout_s > 0:
            # A shutdown that hangs (a library thread that will not join) must not
            # keep the box from restarting: dump every thread's stack, then exit.
            faulthandler.dump_traceback_later(self.stop_timeout_s, exit=True)
            # Before that, name the asyncio tasks still pending (threads are not all).
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(
                    max(self.stop_timeout_s - 5.0, 1.0), _log_pending_tasks
                )
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await loop.run_in_executor(self.executor, self.outbox.open)
        log.info(
            "agent_started",
            version=__version__,
            gateway=self.config.site.gateway_id,
            devices=len(self.config.devices),
            backlog=sum(self.outbox.count_by_prio),
            open_s=round(time.perf_counter() - t0, 3),
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self._stop_early:
            self.stop()
        await self.control.start()
        writer_task = asyncio.create_task(self.writer.run(), name="writer")
        self._sender_task = asyncio.create_task(self.sender.run(), name="sender")
        for src in self.sources:
            self._start_source(src)
        summary_task = asyncio.create_task(self._summaries(), name="summary")
        resend_task = asyncio.create_task(self._resend_alerts(), name="alert-resend")
        anomaly_task = asyncio.create_task(self.anomaly.run(), name="anomaly")
        watch_task = asyncio.create_task(self._watch_config(), name="config-watch")
        await self.ops.start()
        try:
            await self._stop.wait()
        finally:
            log.info("agent_stopping")
            await self.ops.stop()
            source_tasks = [task for _src, task in self._running.values()]
            background = [*source_tasks, summary_task, resend_task, watch_task, anomaly_task,
                          *self._command_tasks]  # fmt: skip
            stuck = await cancel_and_wait(background, OUTER_EVERY_S, 2 * OUTER_EVERY_S)
            stuck += await cancel_and_wait([writer_task], OUTER_EVERY_S, OUTER_EVERY_S)
            if stuck:
                log.error("stop_tasks_ignored_cancel", tasks=[t.get_name() for t in stuck])
            await self.writer.flush()
            log.info("agent_stopping_uplink", writer_flushed=self.writer.accepted)
            await self._stop_sender()
            await self.control.close()
            await loop.run_in_executor(self.executor, self.outbox.close)
            self.executor.shutdown(wait=True)
            self.alert_store.close()
            if self.signer is not None:
                self.signer.close()
            log.info("agent_stopped")

    # -- sources and reload -------------------------------------------------

    def _start_source(self, src: Source) -> None:
        task = asyncio.create_task(src.run(self.sink), name=f"source:{src.name}")
        self._running[bus_of(src)] = (src, task)

    async def _stop_source(self, bus: str) -> None:
        entry = self._running.pop(bus, None)
        if entry is not None:
            stuck = await cancel_and_wait([entry[1]], OUTER_EVERY_S, 2 * OUTER_EVERY_S)
            if stuck:  # still holding its port or socket: say so, a restart will free it
                log.error("source_ignored_cancel", bus=bus)
            self.sources = [s for s in self.sources if s is not entry[0]]

    async def _stop_sender(self) -> None:
        await self.sender.stop()
        try:
            await asyncio.wait_for(self._sender_task, 10)
        except TimeoutError:
            log.warning("uplink_stop_timeout")

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_quietly("sighup"))
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _reload_quietly(self, reason: str) -> None:
        # systemd (systemctl reload): RELOADING=1 now, READY=1 when done.
        self.ops.notifier.reloading()
        try:
            await self.reload(reason)
        finally:
            self.ops.ready()

    async def _watch_config(self, every_s: float = 5.0) -> None:
        """Reload when the config file changes (its size, time or content)."""
        while True:
            await asyncio.sleep(every_s)
            stamp = await asyncio.to_thread(_stamp, self.config.source)
            if stamp != self._config_stamp:
                self._config_stamp = stamp
                await self.reload("file_changed")

    async def reload(self, reason: str) -> dict[str, Any]:
        """Validate the config file again; on success apply it, else keep running as is.

        Buses whose settings or devices did not change keep running untouched
        (their state, counters and anomaly streams stay); changed ones are
        restarted, removed ones stopped, new ones started. The outbox is the
        same file throughout: nothing buffered is lost.
        """
        from cityedge.config.loader import check_config

        # The file as this reload reads it: the file watcher must not reload the
        # same text again (a SIGHUP after an edit was applied twice, and status
        # then showed the second, empty, reload).
        self._config_stamp = await asyncio.to_thread(_stamp, self.config.source)
        new, problems = await asyncio.to_thread(
            check_config, self.config.source, self.config.profiles_dir, self.profile_updates
        )
        if new is None or problems:
            self.last_reload = {"ok": False, "reason": reason, "at": time.time(),
                                "problems": [str(p) for p in problems]}  # fmt: skip
            log.error("config_reload_refused", reason=reason, problems=len(problems),
                      first=str(problems[0]) if problems else None)  # fmt: skip
            return self.last_reload
        old = self.config
        changed = []
        self.source_ctx = dataclasses.replace(self.source_ctx, bus_names=frozenset(new.buses))
        for name in sorted(set(old.buses) | set(new.buses)):
            if _bus_view(old, name) == _bus_view(new, name):
                continue
            changed.append(name)
            await self._stop_source(name)
            devices = [d for d in new.devices if d.bus == name]
            if name in new.buses and devices:
                src = factory(new.buses[name].type)(new.buses[name], devices, self.source_ctx)
                self.sources.append(src)
                self._start_source(src)
        self.alerts.rules = rules_from(new)
        self.anomaly.apply(new)
        self.config = new
        restarted_uplink = new.uplink != old.uplink or new.site != old.site
        if restarted_uplink:
            log.info("agent_stopping_uplink", writer_flushed=self.writer.accepted)
            await self._stop_sender()
            self.sender = self._make_sender(new)
            self._sender_task = asyncio.create_task(self.sender.run(), name="sender")
        ops_applied = await self.ops.apply(old, new)
        ignored = [k for k in ("storage", "signing") if getattr(new, k) != getattr(old, k)]
        link = self.sender.link
        if link is not None and not restarted_uplink:
            await self._birth(link)  # the measurement changed: attest again
        self.last_reload = {"ok": True, "reason": reason, "at": time.time(),
                            "buses_restarted": changed, "uplink_restarted": restarted_uplink,
                            "applied": ops_applied, "needs_restart": ignored}  # fmt: skip
        log.info("config_reloaded", reason=reason, buses_restarted=changed,
                 uplink_restarted=restarted_uplink, applied=ops_applied,
                 needs_restart=ignored)  # fmt: skip
        return self.last_reload

    async def sink(self, readings: Sequence[Reading]) -> None:
        """Every source's sink: telemetry to the outbox, threshold alerts ahead of it."""
        if self.silenced:
            readings = [silent(r) if r.device in self.silenced else r for r in readings]
        for r in readings:  # for `cityedge read` of devices that are not read on demand
            points = self.last_values.setdefault(r.device, {})
            if r.point in points or len(points) < LAST_VALUES_PER_DEVICE:
                points[r.point] = r
        await self.writer.submit(readings)
        self.anomaly.observe(readings)
        alerts = self.alerts.on_readings(readings)
        if alerts:
            await self.raise_alerts(alerts)

    async def raise_alerts(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            try:
                await asyncio.to_thread(self.alert_store.record, rec)
            except Exception:  # the record still goes out; a store fault is not the source's
                self.alert_store_failures += 1
                log.exception("alert_store_failed", alert_id=rec["alert_id"])
            log.warning(
                "alert",
                alert_id=rec["alert_id"],
                alert_level=rec["level"],  # "level" is the log line's own
                transition=rec["transition"],
                device=rec["device"],
                point=rec["point"],
            )
        await self.writer.submit(records, Priority.ALERT)

    async def _resend_alerts(self) -> None:
        """Unacknowledged alerts go again every resend period until the cloud acks them.

        Not while alert-class records still wait in the outbox (the uplink is
        down, or slow): the last copies have not left yet, and queueing more
        would pile up copies of every alert for the length of the outage and
        crowd out new alerts when the outbox is full. Those alerts are due
        again as soon as the copies have gone. (Copies already cut into a batch
        that the broker has not acknowledged are no longer counted here: while a
        dead link is not yet noticed, at most ``max_inflight_batches`` such
        batches can hold one more copy each.)
        """
        while True:
            await asyncio.sleep(min(30.0, self.alert_store.resend_s))
            if self.outbox.count_by_prio[Priority.ALERT] > 0:
                continue
            due = await asyncio.to_thread(self.alert_store.due)
            if due:
                log.info("alerts_resent", count=len(due))
                await self.writer.submit(due, Priority.ALERT)

    # -- what drills and the technician CLI need -----------------------------

    def silence(self, device: str, silent: bool) -> None:
        """A drill's deaf ear: the device's readings arrive as bad ('silent')."""
        if silent:
            self.silenced.add(device)
        else:
            self.silenced.discard(device)

    async def pause_uplink(self, paused: bool) -> None:
        if paused and not self._uplink_paused:
            self._uplink_paused = True
            await self._stop_sender()
        elif not paused and self._uplink_paused:
            self._uplink_paused = False
            self.sender = self._make_sender(self.config)
            self._sender_task = asyncio.create_task(self.sender.run(), name="sender")

    async def set_outbox_bound(self, max_bytes: int) -> None:
        self.outbox.max_bytes = max_bytes
        await asyncio.get_running_loop().run_in_executor(self.executor, self.outbox.make_room, 0)

    async def snapshot(self) -> dict[str, Any]:
        return await self._status({})

    async def _control_read(self, req: dict[str, Any]) -> dict[str, Any]:
        """One read through the bus's own scheduler (never collides with polling)."""
        device = req.get("device")
        dev = next((d for d in self.config.devices if d.id == device), None)
        if dev is None:
            known = ", ".join(d.id for d in self.config.devices)
            raise ValueError(f"unknown device {device!r} (known: {known})")
        src = self._running.get(dev.bus, (None, None))[0]
        read_now = getattr(src, "read_now", None)
        points = req.get("points") or None
        if points:
            names = dev.profile.point_names()
            unknown = [str(p) for p in points if p not in names]
            if unknown:
                raise ValueError(
                    f"{dev.id} has no point {', '.join(map(repr, unknown))} "
                    f"(its profile {dev.profile_name} has: {', '.join(names)})"
                )
        if read_now is None:
            # A bus that only listens (LoRaWAN, BLE, a sensor that sends on its
            # own, OPC UA subscriptions): the last value of each point it sent.
            last = self.last_values.get(dev.id, {})
            wanted = points or list(last)
            kind = self.config.buses[dev.bus].type
            return {
                "device": dev.id,
                "readings": [last[p].to_record() for p in wanted if p in last],
                "last_received": True,
                "note": f"bus {dev.bus} ({kind}) is not read on demand: these are the "
                "last values the device sent",
            }
        readings = await read_now(dev.id, points)
        return {"device": dev.id, "readings": [r.to_record() for r in readings]}

    async def _control_reload(self, _req: dict[str, Any]) -> dict[str, Any]:
        return await self.reload("control")

    def _sources_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for src in self.sources:
            st = src.status()
            devices = st.get("devices")
            if self.silenced and isinstance(devices, dict):
                for dev in self.silenced & set(devices):
                    devices[dev] = {
                        **devices[dev],
                        "state": "down",
                        "last_error": "drill: silenced",
                    }
            out[src.name] = st
        return out

    def _active_alerts(self) -> dict[str, int]:
        """Alerts raised and not cleared, per level (status, metrics, health)."""
        counts = dict.fromkeys((lvl.label for lvl in self.alerts.tracker.raised), 0)
        for _alert_id, level in self.alerts.tracker.active().values():
            counts[level.label] += 1
        return counts

    def _signer_status(self) -> dict[str, Any] | None:
        if self.signer is None:
            return None
        s = self.sender.stats
        out: dict[str, Any] = {
            "state": "down" if s.signer_down_since is not None else "ok",
            "down_since": s.signer_down_since,
            "failures": s.signer_errors,
        }
        if self.sealer is not None:
            out["latency_sum_s"] = self.sealer.sealer.latency_sum_s
            out["latency_count"] = self.sealer.sealer.latency_count
        return out

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_every_s)
            s = self.sender.stats
            log.info(
                "agent_summary",
                accepted=self.writer.accepted,
                outbox_waiting=sum(self.outbox.count_by_prio),
                outbox_bytes=self.outbox.total_bytes(),
                uplink=s.state,
                batches_acked=s.batches_acked,
                readings_acked=s.readings_acked,
            )

    async def _status(self, _req: dict[str, Any]) -> dict[str, Any]:
        s = self.sender.stats
        return {
            "gateway": self.config.site.gateway_id,
            "site": self.config.site.id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "writer": {
                "accepted": self.writer.accepted,
                "refused": self.writer.refused,
                "queued": self.writer.depth(),
                "waits": self.writer.waits,  # submits that waited for a full queue
            },
            "outbox": self.outbox.stats(),
            "uplink": {
                "state": "paused" if self._uplink_paused else s.state,
                "connects": s.connects,
                "reconnects": s.reconnects,
                "batches_published": s.batches_published,
                "batches_acked": s.batches_acked,
                "batches_nacked": s.batches_nacked,
                "readings_acked": s.readings_acked,
                "live_batches": s.live_batches,
                "backlog_batches": s.backlog_batches,
                "last_error": s.last_error,
            },
            "sources": self._sources_status(),
            "clock": self.clock.state(),
            "signer": self._signer_status(),
            "reload": self.last_reload,
            "anomaly": self.anomaly.status(),
            "alerts": {
                "active": self._active_alerts(),
                "raised": {lvl.label: n for lvl, n in self.alerts.tracker.raised.items()},
                "unacknowledged": self.alert_store.unacked(),
                "forgotten_unacknowledged": dict(self.alert_store.forgotten),
                "store_failures": self.alert_store_failures,
            },
            "commands": {
                "done": dict(self.commands.done),
                "rejected": dict(self.commands.rejected),
            },
        }


def _bus_view(config: Config, name: str) -> tuple[BusConfig | None, list[DeviceConfig]]:
    """What a bus runs with: its settings and its devices (compared by value).

    Not where a device is declared: a line added above it (a [health] table,
    a comment) must not restart its bus and zero its counters.
    """
    devices = [dataclasses.replace(d, line=0) for d in config.devices if d.bus == name]
    return config.buses.get(name), devices


def _stamp(path: Path) -> tuple[float, int, str]:
    try:
        data = path.read_bytes()
        st = path.stat()
    except OSError:
        return (0.0, 0, "")
    return (st.st_mtime, st.st_size, hashlib.sha256(data).hexdigest())


def silent(r: Reading) -> Reading:
    """What a drill's silenced device looks like: its points bad, reason 'silent'."""
    return Reading(r.device, r.point, None, r.unit, r.ts, Quality.BAD, r.family, r.cell,
                   reason="silent", time_ok=r.time_ok)  # fmt: skip


def bus_of(src: Source) -> str:
    """The bus a source runs: source names are '<kind>:<bus name>' (drivers/base.py)."""
    return src.name.split(":", 1)[-1]


def _log_pending_tasks() -> None:
    """Log every pending asyncio task and where it waits (a shutdown is hanging)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=3)
        where = [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in frames]
        log.error("stop_hanging_task", task=task.get_name(), where=where)
