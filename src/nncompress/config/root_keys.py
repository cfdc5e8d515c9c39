"""Top-level keys: unknown ones are allowed (training-script settings), near-misses of ours are not.

NNCF's example configs carry their training script's keys (``model``, ``epochs``, ...) next to the
compression keys, so an unknown top-level key cannot be an error. A key one or two edits away from
a key we know, though, is almost surely a typo that would otherwise silently disable compression.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nncompress.config.json_paths import Path
from nncompress.config.schema import ALGORITHM_NAMES, ROOT_KEYS
from nncompress.config.suggestions import edit_distance, normalise

Problem = tuple[Path, str]


def _allowed_edits(known: str) -> int:
    # Short keys tolerate fewer edits, or unrelated short words would be flagged.
    if len(known) <= 7:
        return 1
    if len(known) <= 15:
        return 2
    return 3


def likely_intended_key(key: str) -> str | None:
    """The known top-level key that ``key`` is probably a misspelling of, or None."""
    norm = normalise(key)
    best: tuple[int, str] | None = None
    for known in ROOT_KEYS:
        distance = edit_distance(norm, normalise(known))
        if distance <= _allowed_edits(known) and (best is None or distance < best[0]):
            best = (distance, known)
    return best[1] if best else None


def check_root_keys(config: Mapping[Any, Any]) -> list[Problem]:
    """Problems for top-level keys that look like misspelled or misplaced compression keys."""
    problems: list[Problem] = []
    for key in config:
        if not isinstance(key, str):
            problems.append(((str(key),), f"keys must be strings, got {type(key).__name__} {key!r}"))
            continue
        if key in ROOT_KEYS:
            continue
        if normalise(key) in ALGORITHM_NAMES:
            problems.append(
                (
                    (key,),
                    f"'{key}' is an algorithm name, not a top-level key; algorithm sections go in "
                    f'\'compression\', e.g. "compression": {{"algorithm": "{normalise(key)}", ...}}',
                )
            )
            continue
        intended = likely_intended_key(key)
        if intended is not None:
            problems.append(
                (
                    (key,),
                    f"unknown top-level key '{key}' looks like a misspelling of '{intended}'; "
                    f"rename it to '{intended}'",
                )
            )
    return problems
