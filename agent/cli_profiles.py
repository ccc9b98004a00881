"""``cityedge profiles [--config FILE]``: the device profiles a config can name, and where from.

Lists every profile in the folders the agent looks in for that config:
profile updates installed by signed command (``<state_dir>/profiles``,
"update") first, then the config's profiles folder (docs/config.md, "Paths":
"shipped" for the package's own, "local" for another). A profile that
does not validate is listed with its first problem, so a technician sees it
before a device names it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cityedge.cli_util import DEFAULT_CONFIG, add_json, say
from cityedge.cli_util import print_json as _print_json
from cityedge.errors import EXIT_CONFIG, EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profiles", help="list the device profiles a config can name")
    p.add_argument(
        "--config",
        type=Path,
        help="the config whose folders to list (default: /etc/cityedge/cityedge.toml if it "
        "exists, else the shipped profiles)",
    )
    p.add_argument("--profiles", type=Path, help="list this profiles folder instead")
    add_json(p)


def folders(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(label, folder) in lookup order: updates first, then the profiles folder."""
    from cityedge.config.loader import resolve_profiles_dir, shipped_profiles_dir

    if args.profiles is not None:
        return [("given", args.profiles)]
    config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if config is None:
        return [("shipped", shipped_profiles_dir())]
    out = []
    updates = _updates_dir(config)
    if updates is not None:
        out.append(("update", updates))
    folder = resolve_profiles_dir(config)
    out.append(("shipped" if folder == shipped_profiles_dir() else "local", folder))
    return out


def _updates_dir(config: Path) -> Path | None:
    """``<state_dir>/profiles`` of a config that loads; None otherwise."""
    from cityedge.config.loader import check_config

    cfg, _problems = check_config(config)
    if cfg is None:
        return None
    folder = cfg.storage.profile_updates
    return folder if folder.is_dir() else None


def run(args: argparse.Namespace) -> int:
    from cityedge.config.profile_loader import available_profiles, check_profile

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for label, folder in folders(args):
        for name in available_profiles(folder):
            profile, problems = check_profile(folder, name)
            row: dict[str, Any] = {"name": name, "from": label, "folder": str(folder)}
            if profile is None:
                row["problem"] = str(problems[0]) if problems else "does not load"
            else:
                row.update(protocol=profile.protocol, family=profile.family,
                           codec=profile.codec, values=len(profile.all_points()))  # fmt: skip
            row["hidden"] = name in seen  # an update of the same name wins
            seen.add(name)
            rows.append(row)
    if args.json:
        _print_json(rows)
    elif not rows:
        where = ", ".join(str(f) for _l, f in folders(args))
        say("profiles", f"no profiles in {where}")
    else:
        print(f"{'profile':<32} {'from':<8} {'protocol':<8} {'family':<13} {'codec':<15} values")
        for r in rows:
            what = r.get("problem") or (
                f"{r['protocol']:<8} {r['family']:<13} {r['codec'] or '-':<15} {r['values']}"
            )
            mark = " (overridden by an update)" if r["hidden"] else ""
            print(f"{r['name']:<32} {r['from']:<8} {what}{mark}")
    return EXIT_CONFIG if any("problem" in r for r in rows) else EXIT_OK
