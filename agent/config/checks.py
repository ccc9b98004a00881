"""Declarative validation of parsed TOML: field specs, checkers and problems.

A section is a mapping ``key -> Field``; a :class:`Field` names a checker and
whether the key is required. :func:`validate_table` walks a table against its
spec, reports every unknown key (with a "did you mean"), every missing
required key (at the table's header line) and every bad value, and returns
the converted values of the keys that passed. Checkers are small factories
(:func:`integer`, :func:`choice`, :func:`table`...) so adding a config section
is adding a spec, not code.

Both the config loader and the profile loader use this module.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cityedge.config.toml_lines import Key, format_key, key_lines
from cityedge.errors import Problem


class Invalid(Exception):
    """Raised by a checker for a bad value; becomes one :class:`Problem`."""

    def __init__(self, message: str, allowed: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.allowed = allowed


class _Invalid:
    """Returned by nested checkers whose problems are already reported."""


INVALID: Any = _Invalid()
_NO_GOT: Any = object()


@dataclass(slots=True)
class Context:
    """One file being validated: its name, key positions and problems so far."""

    file: str
    lines: Mapping[Key, int]
    base: Path  # relative paths in the file resolve against this folder
    problems: list[Problem] = field(default_factory=list)

    def line(self, key: Key) -> int:
        """The line of ``key``, else of its nearest declared parent, else 1."""
        for n in range(len(key), 0, -1):
            line = self.lines.get(key[:n])
            if line is not None:
                return line
        return 1

    def report(
        self, key: Key, message: str, allowed: str | None = None, got: object = _NO_GOT
    ) -> None:
        has_got = got is not _NO_GOT
        self.problems.append(
            Problem(
                file=self.file,
                line=self.line(key),
                path=format_key(key) or "(top level)",
                message=message,
                allowed=allowed,
                got=got if has_got else None,
                has_got=has_got,
            )
        )


Check = Callable[[Context, Any, Key], Any]


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a table: how to check it, and whether it must be present."""

    check: Check
    required: bool = False
    attr: str | None = None  # the dataclass attribute, when named differently


Fields = Mapping[str, Field]
_ERA = re.compile(r"\(at (?:line (\d+), column \d+|end of document)\)\s*$")


def parse_toml(file: str, data: bytes, base: Path) -> tuple[dict[str, Any] | None, Context]:
    """Decode and parse a TOML document; syntax errors become problems."""
    ctx = Context(file=file, lines={}, base=base)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        ctx.problems.append(Problem(file, line, "(file)", "not valid UTF-8 text"))
        return None, ctx
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _ERA.search(str(exc))
        line = int(match.group(1)) if match and match.group(1) else text.count("\n") + 1
        message = _ERA.sub("", str(exc)).strip() if match else str(exc)
        ctx.problems.append(Problem(file, line, "(syntax)", f"invalid TOML: {message}"))
        return None, ctx
    except RecursionError:
        ctx.problems.append(Problem(file, 1, "(syntax)", "invalid TOML: nested too deeply"))
        return None, ctx
    ctx.lines = key_lines(text)
    return doc, ctx


def validate_table(
    ctx: Context,
    value: Any,
    fields: Fields,
    key: Key,
    elsewhere: Mapping[str, str | None] | None = None,
) -> dict[str, Any] | None:
    """Check ``value`` against ``fields``; return the good values by attribute.

    ``elsewhere`` names keys that are valid in a sibling spec: the message
    says where they belong instead of "unknown key", with the keys this table
    takes as allowed (``None``: stay silent).
    """
    if not isinstance(value, dict):
        ctx.report(key, "must be a table", got=value)
        return None
    elsewhere = elsewhere or {}
    for name in value:
        if name in fields:
            continue
        if name in elsewhere:
            if elsewhere[name] is not None:
                ctx.report((*key, name), str(elsewhere[name]), ", ".join(fields) or "none")
            continue
        _unknown(ctx, (*key, name), name, list(fields))
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in value:
            if spec.required:
                ctx.report(key, f"missing required key {name!r}")
            continue
        checked = run_check(ctx, spec.check, value[name], (*key, name))
        if checked is not INVALID:
            out[spec.attr or name] = checked
    return out


def run_check(ctx: Context, check: Check, value: Any, key: Key) -> Any:
    """Apply one checker; an :class:`Invalid` becomes a problem and ``INVALID``."""
    try:
        return check(ctx, value, key)
    except Invalid as exc:
        ctx.report(key, exc.message, exc.allowed, value)
        return INVALID


def _unknown(ctx: Context, key: Key, name: str, known: list[str]) -> None:
    hint = did_you_mean(name, known)
    if hint:
        ctx.report(key, f"unknown key{hint}")
    else:
        ctx.report(key, "unknown key", allowed=", ".join(known) or "none")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``", did you mean 'x'?"`` for the closest of ``known`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article: "an opcua", "a modbus", "a uint16".

    By the first letter, which fits the identifiers messages name (protocols,
    bus types, data types, whose u reads "you"); not English at large.
    """
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


# -- checkers ---------------------------------------------------------------


def text(pattern: str | None = None, *, nonempty: bool = True, hint: str | None = None) -> Check:
    """A string, optionally matching ``pattern`` (``hint`` describes it)."""
    compiled = re.compile(pattern) if pattern else None

    def check(ctx: Context, value: Any, key: Key) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string", hint)
        if nonempty and not value.strip():
            raise Invalid("must not be empty", hint)
        if compiled and not compiled.fullmatch(value):
            raise Invalid("has an invalid format", hint or pattern)
        return value

    return check


def boolean() -> Check:
    def check(ctx: Context, value: Any, key: Key) -> bool:
        if not isinstance(value, bool):
            raise Invalid("must be true or false")
        return value

    return check


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    """An integer (a bool is not one) within ``[lo, hi]``."""
    allowed = _range(lo, hi)

    def check(ctx: Context, value: Any, key: Key) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer", allowed)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Invalid("out of range", allowed)
        return value

    return check


def number(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Check:
    """A finite number within ``[lo, hi]`` (``(lo, hi]`` if ``above``), as float."""
    allowed = _range(lo, hi, above)

    def check(ctx: Context, value: Any, key: Key) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("must be a number", allowed)
        try:
            result = float(value)
        except OverflowError:
            raise Invalid("out of range", allowed) from None
        if not math.isfinite(result):
            raise Invalid("must be a finite number", allowed)
        low_bad = lo is not None and (result <= lo if above else result < lo)
        if low_bad or (hi is not None and result > hi):
            raise Invalid("out of range", allowed)
        return result

    return check


def choice(*values: str | int) -> Check:
    """One of ``values``, of the same type (``"9600"`` is not ``9600``)."""
    allowed = ", ".join(str(v) for v in values)

    def check(ctx: Context, value: Any, key: Key) -> str | int:
        for option in values:
            if type(value) is type(option) and value == option:
                return option
        if all(isinstance(v, int) for v in values) and type(value) is not int:
            raise Invalid("must be an integer", allowed)
        if all(isinstance(v, str) for v in values) and not isinstance(value, str):
            raise Invalid("must be a string", allowed)
        raise Invalid("unsupported value", allowed)

    return check


def path(kind: str | None = None) -> Check:
    """A path, resolved against the file's folder; ``kind`` "file"/"dir" must exist."""

    def check(ctx: Context, value: Any, key: Key) -> Path:
        if not isinstance(value, str):
            raise Invalid("must be a string (a path)")
        if not value.strip() or "\0" in value:
            raise Invalid("must be a path")
        resolved = Path(os.path.normpath(ctx.base / value))
        if kind == "file" and not resolved.is_file():
            raise Invalid(f"no such file: {resolved}")
        if kind == "dir" and not resolved.is_dir():
            raise Invalid(f"no such folder: {resolved}")
        return resolved

    return check


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
SIZE_HINT = 'bytes as an integer, or a string like "256MiB" (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)'


def size(lo: int = 1) -> Check:
    """A byte count: an integer, or a string with a unit such as ``"256MiB"``."""
    allowed = f"{SIZE_HINT}; at least {lo}"

    def check(ctx: Context, value: Any, key: Key) -> int:
        if isinstance(value, str):
            match = _SIZE.fullmatch(value)
            unit = _UNITS.get(match.group(2).lower()) if match else None
            if match is None or unit is None:
                raise Invalid("not a size", allowed)
            count = int(Decimal(match.group(1)) * unit)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer or a size string", allowed)
        else:
            count = value
        if count < lo:
            raise Invalid("too small", allowed)
        return count

    return check


def table(
    fields: Fields,
    build: Callable[..., Any] = dict,
    post: Callable[[Context, Any, Key], None] | None = None,
) -> Check:
    """A nested table checked against ``fields``, built with ``build(**values)``.

    ``post`` runs cross-field checks on the built object and reports problems
    itself; it also runs when other keys were bad, as long as every required
    key is there, so one pass finds everything. Any problem inside makes the
    result ``INVALID``.
    """
    required = [spec.attr or name for name, spec in fields.items() if spec.required]

    def check(ctx: Context, value: Any, key: Key) -> Any:
        before = len(ctx.problems)
        values = validate_table(ctx, value, fields, key)
        if values is None or any(name not in values for name in required):
            return INVALID
        built = build(**values)
        if post is not None:
            post(ctx, built, key)
        return INVALID if len(ctx.problems) > before else built

    return check


def free_table() -> Check:
    """A table whose keys its consumer checks (a codec's own options)."""

    def check(ctx: Context, value: Any, key: Key) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid("must be a table")
        return dict(value)

    return check


def array(item: Check, *, min_items: int = 0, max_items: int | None = None) -> Check:
    """An array whose items pass ``item``; bad items stay in place as ``INVALID``."""

    def check(ctx: Context, value: Any, key: Key) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid("must be an array")
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            raise Invalid("wrong number of items", _range(min_items, max_items))
        return [run_check(ctx, item, v, (*key, n)) for n, v in enumerate(value)]

    return check


def raw_records() -> Check:
    """An array of tables, checked later by a caller that knows their context."""

    def check(ctx: Context, value: Any, key: Key) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid("must be an array of tables ([[...]])")
        return list(value)

    return check


def records(fields: Fields, elsewhere: Mapping[str, str | None] | None = None) -> Check:
    """An array of tables; each item is its good values (a dict) or ``None``.

    Items stay partial on problems so cross-item checks (unique ids, references)
    still run on what is there and every problem is found in one pass.
    ``elsewhere``: as for :func:`validate_table`, for every item.
    """

    def check(ctx: Context, value: Any, key: Key) -> list[dict[str, Any] | None]:
        if not isinstance(value, list):
            raise Invalid("must be an array of tables ([[...]])")
        return [validate_table(ctx, v, fields, (*key, n), elsewhere) for n, v in enumerate(value)]

    return check


def _range(lo: float | None, hi: float | None, above: bool = False) -> str | None:
    if lo is not None and hi is not None:
        return f"{lo}..{hi}" if not above else f"> {lo} and <= {hi}"
    if lo is not None:
        return f"> {lo}" if above else f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return None
