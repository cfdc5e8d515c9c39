"""JSON paths as users read them: ``compression[1].params.pruning_target``.

Internally a path is a tuple of keys (str) and list indices (int); these helpers turn it into text
and back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

PathPart = str | int
Path = tuple[PathPart, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_TOKEN = re.compile(
    r"""\.?(?P<key>[A-Za-z_][A-Za-z0-9_\-]*)|\[(?P<index>\d+)\]|\[(?P<quoted>"(?:[^"\\]|\\.)*")\]"""
)


def format_path(parts: Iterable[PathPart]) -> str:
    """``("compression", 1, "params")`` -> ``compression[1].params``; odd keys are quoted: ``["a/b"]``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(str(part))}]")
    return "".join(out)


def parse_path(text: str) -> Path:
    """The inverse of ``format_path``; raises ValueError on a malformed path."""
    parts: list[PathPart] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or (pos == 0 and text.startswith(".")):
            raise ValueError(f"malformed parameter path {text!r} at character {pos}")
        if match.group("key") is not None:
            parts.append(match.group("key"))
        elif match.group("index") is not None:
            parts.append(int(match.group("index")))
        else:
            parts.append(json.loads(match.group("quoted")))
        pos = match.end()
    return tuple(parts)


def short_json(value: object, limit: int = 60) -> str:
    """A value as JSON (or repr for non-JSON objects), cut to ``limit`` characters for messages."""
    try:
        text = json.dumps(value, sort_keys=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
