"""``cityedge status``: a running agent's state, readable on a terminal (``--json`` for scripts).

Renders the ``status`` answer of the control socket (its sections are in
docs/operations.md, "The status snapshot"): gateway, clock, uplink, outbox,
signer, alerts, last reload, anomaly engine, then every source (Modbus, OPC
UA, LoRaWAN, ChirpStack, BLE, serial) with its devices. A section the agent
does not report is left out; a key a source does not have is not shown.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from typing import Any

from cityedge.cli_util import AgentRefused, AgentUnreachable, add_json, add_socket, ask, say
from cityedge.cli_util import print_json as _print_json
from cityedge.errors import EXIT_FAILURE, EXIT_OK
from cityedge.metrics import DOWN_STATES

# Per-source keys worth a mention on the bus line, in this order.
BUS_EXTRAS = (
    "endpoint", "security", "mode", "port", "forwarders", "adapter", "scan_mode_in_use", "queued",
)  # fmt: skip
# Per-device keys worth a mention, with their label.
DEVICE_EXTRAS = (
    ("unit_id", "unit"),
    ("codec", "codec"),
    ("rssi", "rssi"),
    ("last_rssi", "rssi"),
    ("last_snr", "snr"),
    ("fcnt_up", "fcnt"),
    ("points", "points"),
)
LAST_KEYS = ("last_poll", "last_value", "last_frame", "last_seen")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("status", help="a running agent's devices, outbox, uplink, clock, alerts")
    add_socket(s)
    add_json(s)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    try:
        answer = await ask(args.socket, "status")
    except (AgentUnreachable, AgentRefused) as exc:
        say("status", str(exc))
        return EXIT_FAILURE
    if args.json:
        _print_json(answer)
    else:
        print(render_status(answer))
    return EXIT_OK


def _d(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _when(value: object) -> str:
    """A timestamp as text: ISO strings as they are, Unix seconds as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return str(value)


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours or days)
    return " ".join([*parts, f"{minutes}m", f"{s}s"])


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"


def render_status(st: Mapping[str, Any]) -> str:
    """A terminal view of a status answer."""
    out = [
        f"gateway {st.get('gateway')}  site {st.get('site')}  cityedge {st.get('version', '?')}  "
        f"up {_duration(st.get('uptime_s'))}"
    ]
    for section in (_clock, _uplink, _outbox, _signer, _alerts, _reload, _anomaly):
        line = section(st)
        if line:
            out.append(line)
    for name, src in sorted(_d(st.get("sources")).items()):
        out.extend(_source(name, _d(src)))
    return "\n".join(out)


def _clock(st: Mapping[str, Any]) -> str | None:
    if "clock" not in st:
        return None
    c = _d(st["clock"])
    steps = f"  wall-clock steps {c.get('steps', 0)}" if c.get("steps") else ""
    if c.get("ok"):
        return f"clock    synchronised ({c.get('source')}){steps}"
    gps = _d(c.get("gps"))
    why = f"; GPS disagrees by {gps.get('offset_s')} s" if gps and not gps.get("agrees") else ""
    return f"clock    NOT synchronised: readings are flagged time_ok=false{why}{steps}"


def _uplink(st: Mapping[str, Any]) -> str | None:
    if "uplink" not in st:
        return None
    up = _d(st["uplink"])
    line = (
        f"uplink   {up.get('state')}  batches acked {up.get('batches_acked')}  "
        f"readings acked {up.get('readings_acked')}  reconnects {up.get('reconnects')}"
    )
    if up.get("backlog_batches"):
        line += f"  backlog {up['backlog_batches']} batches"
    if up.get("last_error"):
        line += f"  last error: {up['last_error']}"
    return line


def _outbox(st: Mapping[str, Any]) -> str | None:
    if "outbox" not in st:
        return None
    ob = _d(st["outbox"])
    used, bound = ob.get("bytes_waiting"), ob.get("bound_bytes")
    share = (
        f" ({100 * used / bound:.0f} %)"
        if isinstance(used, int | float) and isinstance(bound, int | float) and bound
        else ""
    )
    drops = {
        k.removeprefix("dropped_"): v
        for k, v in _d(ob.get("counters")).items()
        if k.startswith("dropped")
    }
    return (
        f"outbox   {ob.get('readings_waiting')} readings waiting, {used} bytes of {bound}{share}"
        f"  dropped: {_counts(drops)}"
    )


def _signer(st: Mapping[str, Any]) -> str | None:
    if "signer" not in st:
        return None
    if st["signer"] is None:  # the agent has no signer: [signing] enabled = false
        return "signer   off (signing disabled: batches go out unsigned)"
    sg = _d(st["signer"])
    line = f"signer   {sg.get('state')}"
    count, total = sg.get("latency_count"), sg.get("latency_sum_s")
    if isinstance(count, int) and count and isinstance(total, int | float):
        line += f"  mean latency {1000 * total / count:.2f} ms"
    if sg.get("failures"):
        line += f"  failures {sg['failures']}"
    return line


def _alerts(st: Mapping[str, Any]) -> str | None:
    if "alerts" not in st:
        return None
    al = _d(st["alerts"])
    active = al.get("active")
    shown = _counts(_d(active)) if isinstance(active, Mapping) else str(active)
    line = f"alerts   active {shown}  raised {_counts(_d(al.get('raised')))}"
    if al.get("unacknowledged"):
        line += f"  unacknowledged {al['unacknowledged']}"
    return line


def _reload(st: Mapping[str, Any]) -> str | None:
    rl = st.get("reload")
    if not isinstance(rl, Mapping):
        return None
    when = _when(rl.get("at")) if rl.get("at") is not None else "?"
    if rl.get("ok"):
        line = f"reload   ok at {when} ({rl.get('reason')})"
        if rl.get("buses_restarted"):
            line += f"  restarted {', '.join(map(str, rl['buses_restarted']))}"
        if rl.get("applied"):
            line += f"  applied {', '.join(map(str, rl['applied']))}"
        if rl.get("needs_restart"):
            line += f"  needs a restart for {', '.join(map(str, rl['needs_restart']))}"
        return line
    problems = rl.get("problems")
    if isinstance(problems, list) and problems:
        detail = f"{len(problems)} problem(s), first: {problems[0]}"
    else:
        detail = str(rl.get("error") or rl.get("reason"))
    return f"reload   FAILED at {when} ({rl.get('reason')}): {detail}; still on the previous config"


def _anomaly(st: Mapping[str, Any]) -> str | None:
    if "anomaly" not in st:
        return None
    an = _d(st["anomaly"])
    models = _d(an.get("models"))
    line = f"anomaly  scored {an.get('scored')}  anomalies {an.get('anomalies')}"
    if models:
        line += "  models " + ", ".join(f"{k} {v}" for k, v in sorted(models.items()))
    return line


def _source(name: str, src: Mapping[str, Any]) -> list[str]:
    state = "connected" if src.get("connected") else "NOT CONNECTED"
    head = f"bus {name}  {src.get('type', '')}  {state}"
    for key in BUS_EXTRAS:
        if src.get(key) not in (None, ""):
            head += f"  {key} {src[key]}"
    if _d(src.get("rejected")):
        head += f"  rejected: {_counts(_d(src.get('rejected')))}"
    out = [head]
    for dev, ds in sorted(_d(src.get("devices")).items()):
        out.append(_device(dev, _d(ds)))
    return out


def _device(dev: str, ds: Mapping[str, Any]) -> str:
    if "polls" in ds and not ds.get("frames"):
        activity = f"polls {ds.get('polls', 0):>7}"
    else:
        activity = f"frames {ds.get('frames', 0):>6}"
    line = (
        f"  {dev:<16} {ds.get('state', ''):<12} {activity}  errors {ds.get('errors_total', 0):>5}"
    )
    if ds.get("poll_rate_hz") and ds.get("state") not in DOWN_STATES:
        line += f"  rate {ds['poll_rate_hz']}/s"
    last = next((ds[k] for k in LAST_KEYS if ds.get(k)), None)
    if last is not None:
        line += f"  last {_when(last)}"
    seen: set[str] = set()
    for key, label in DEVICE_EXTRAS:
        if ds.get(key) is not None and label not in seen:
            seen.add(label)
            line += f"  {label} {ds[key]}"
    if ds.get("unresolved"):
        line += f"  unresolved {', '.join(map(str, ds['unresolved']))}"
    if ds.get("last_error"):
        line += f"  last error: {ds['last_error']}"
    return line
