"""Minimal, comment-preserving edits of simple TOML files (``key = scalar`` under ``[table]``s).

dl.toml is the user's file: dl changes the keys it was asked to change and leaves every other
line, comment and line ending as it was. Values spanning lines are refused, never mangled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator.errors import UsageError


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = "".join(escapes.get(c, f"\\u{ord(c):04x}" if ord(c) < 32 or ord(c) == 127 else c) for c in str(value))
    return f'"{out}"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?")
_KEY = re.compile(r"(\s*)([A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')(\s*=\s*)(.*)")


def _value_end(rest: str) -> int | None:
    """Where a one-line scalar value ends in ``rest`` (the text after '='); None if it spans lines."""
    if rest.startswith(('"""', "'''")):
        return None
    if rest.startswith('"'):
        match = re.match(r'"(?:[^"\\]|\\.)*"', rest)
        return match.end() if match else None
    if rest.startswith("'"):
        end = rest.find("'", 1)
        return end + 1 if end > 0 else None
    return len(rest.split("#", 1)[0].rstrip())


def edit(lines: list[str], section: str, key: str, value: object, newline: str) -> list[str]:
    current, table_end, header_at = None, {}, {}
    for i, line in enumerate(lines):
        header = _HEADER.fullmatch(line.rstrip("\r\n"))
        if header:
            current = header.group(1)
            header_at.setdefault(current, i)
            table_end[current] = i + 1
            continue
        match = _KEY.fullmatch(line.rstrip("\r\n"))
        if not match:
            continue
        if current is not None:
            table_end[current] = i + 1
        raw_key = match.group(2)
        if current == section and (raw_key.strip("\"'") if raw_key[0] in "\"'" else raw_key) == key:
            end = _value_end(match.group(4))
            if end is None:
                raise UsageError(
                    f"Cannot edit {section}.{key}: its value spans several lines.", "Edit the file by hand."
                )
            if value is None:
                return lines[:i] + lines[i + 1 :]
            rest = match.group(4)[end:]
            text = f"{match.group(1)}{raw_key}{match.group(3)}{toml_value(value)}{rest}".rstrip() + newline
            return lines[:i] + [text] + lines[i + 1 :]
    if value is None:
        return lines
    entry = f"{_toml_key(key)} = {toml_value(value)}{newline}"
    if section in table_end:
        at = table_end[section]
        if at and not lines[at - 1].endswith(("\n", "\r")):
            lines = lines[: at - 1] + [lines[at - 1] + newline] + lines[at:]
        return lines[:at] + [entry] + lines[at:]
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines = lines[:-1] + [lines[-1] + newline]
    gap = [newline] if lines and lines[-1].strip() else []
    return lines + gap + [f"[{section}]{newline}", entry]


def atomic_write(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
