"""Where each key of a TOML document is declared: key path -> 1-based line.

:mod:`tomllib` gives the values but forgets positions; this scanner walks the
same text and remembers, for every key path, the line a technician should look
at. Paths use the shape of the parsed data: ``("buses", "rs485", "baudrate")``,
``("devices", 1, "unit_id")`` for the second ``[[devices]]``, ``("site",)``
for the ``[site]`` header, ``("profile", "firmware", 0)`` for array items.

Tables point at their header; implicit tables (``[a.b]`` creating ``a``) at
the first line that creates them; keys of inline tables and items of
multi-line arrays at their own line; multi-line strings at their key's line.

The scanner is tolerant: on text tomllib would reject it still returns what it
could place and never raises. It is pure: text in, mapping out.
"""

from __future__ import annotations

import tomllib
from bisect import bisect_right

Key = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}\n#")
# Deeper nesting than this is not worth a position; it also bounds recursion.
_MAX_DEPTH = 200


def key_lines(text: str) -> dict[Key, int]:
    """Map every key path declared in ``text`` to the 1-based line declaring it."""
    return _Scanner(text).run()


def format_key(key: Key) -> str:
    """Render a key path as a technician reads it: ``devices[1].unit_id``."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part and all(c in _BARE for c in part) else _quote(part)
            out += f".{name}" if out else name
    return out


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.out: dict[Key, int] = {}
        self.table: Key = ()
        self.arrays: dict[Key, int] = {}  # array-of-tables path -> items so far
        self.starts = [0] + [n + 1 for n, c in enumerate(text) if c == "\n"]

    def line(self, pos: int) -> int:
        return bisect_right(self.starts, pos)

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def run(self) -> dict[Key, int]:
        while self.i < len(self.s):
            self.skip_blank(newlines=True)
            if self.i >= len(self.s):
                break
            if self.peek() == "[":
                self.header()
            else:
                start = self.i
                self.keyval(self.table, 0)
                if self.i == start:
                    self.i += 1
            self.skip_line()
        return self.out

    def skip_blank(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#" and newlines:
                self.skip_line()
            else:
                return

    def skip_line(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = len(self.s) if end < 0 else end + 1

    def header(self) -> None:
        line = self.line(self.i)
        is_array = self.peek(2) == "[["
        self.i += 2 if is_array else 1
        self.skip_blank(newlines=False)
        keys = self.dotted_key()
        if not keys:
            return
        resolved: Key = ()
        for part in keys[:-1] if is_array else keys:
            resolved = self.descend(resolved, part, line)
        if is_array:
            full = (*resolved, keys[-1])
            self.out.setdefault(full, line)
            count = self.arrays.get(full, 0) + 1
            self.arrays[full] = count
            resolved = (*full, count - 1)
        self.out[resolved] = line  # an explicit header wins over an implicit one
        self.table = resolved

    def descend(self, prefix: Key, part: str, line: int) -> Key:
        path = (*prefix, part)
        self.out.setdefault(path, line)
        if path in self.arrays:
            path = (*path, self.arrays[path] - 1)
        return path

    def dotted_key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            part = self.simple_key()
            if part is None:
                return keys
            keys.append(part)
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return keys
            self.i += 1

    def simple_key(self) -> str | None:
        start = self.i
        c = self.peek()
        if c in ('"', "'"):
            end = self.s.find(c, start + 1)
            while c == '"' and end > 0 and _escaped(self.s, end):
                end = self.s.find(c, end + 1)
            newline = self.s.find("\n", start)
            if end < 0 or (0 <= newline < end):
                return None
            self.i = end + 1
            return _decode_key(self.s[start : end + 1])
        while self.i < len(self.s) and self.s[self.i] in _BARE:
            self.i += 1
        return self.s[start : self.i] if self.i > start else None

    def keyval(self, prefix: Key, depth: int) -> None:
        line = self.line(self.i)
        keys = self.dotted_key()
        if not keys:
            return
        for n in range(1, len(keys) + 1):
            self.out.setdefault((*prefix, *keys[:n]), line)
        self.skip_blank(newlines=False)
        if self.peek() != "=":
            return
        self.i += 1
        self.skip_blank(newlines=False)
        self.value((*prefix, *keys), depth)

    def value(self, path: Key, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.skip_line()
            return
        for quotes in ('"""', "'''"):
            if self.peek(3) == quotes:
                self.multiline_string(quotes)
                return
        c = self.peek()
        if c in ('"', "'"):
            self.string(c)
        elif c == "[":
            self.array(path, depth + 1)
        elif c == "{":
            self.inline_table(path, depth + 1)
        else:
            while self.i < len(self.s) and self.s[self.i] not in _SCALAR_END:
                self.i += 1

    def string(self, quote: str) -> None:
        self.i += 1
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\n":
                return
            if c == "\\" and quote == '"':
                self.i += 2
                continue
            self.i += 1
            if c == quote:
                return

    def multiline_string(self, quotes: str) -> None:
        self.i += 3
        while self.i < len(self.s):
            if quotes == '"""' and self.s[self.i] == "\\":
                self.i += 2
            elif self.peek(3) == quotes:
                self.i += 3
                # up to two quotes right before the delimiter belong to the string
                for _ in range(2):
                    if self.peek() == quotes[0]:
                        self.i += 1
                return
            else:
                self.i += 1

    def array(self, path: Key, depth: int) -> None:
        self.i += 1
        index = 0
        while self.i < len(self.s):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c in ("", "]"):
                self.i += len(c)
                return
            if c == ",":
                self.i += 1
                continue
            start = self.i
            item = (*path, index)
            self.out.setdefault(item, self.line(start))
            self.value(item, depth)
            index += 1
            if self.i == start:
                self.i += 1

    def inline_table(self, path: Key, depth: int) -> None:
        self.i += 1
        while self.i < len(self.s):
            self.skip_blank(newlines=True)
            c = self.peek()
            if c in ("", "}"):
                self.i += len(c)
                return
            if c == ",":
                self.i += 1
                continue
            start = self.i
            self.keyval(path, depth)
            if self.i == start:
                self.i += 1


def _escaped(text: str, pos: int) -> bool:
    """Whether the character at ``pos`` follows an odd run of backslashes."""
    n = 0
    while pos - n - 1 >= 0 and text[pos - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _decode_key(quoted: str) -> str:
    try:
        value = tomllib.loads(f"k = {quoted}").get("k")
    except tomllib.TOMLDecodeError:
        return quoted[1:-1]
    return value if isinstance(value, str) else quoted[1:-1]
