"""'Did you mean ...?' hints that prefer the one obvious fix over a list of look-alikes."""

from __future__ import annotations

from collections.abc import Iterable

from nncompress.errors import did_you_mean


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def normalise(name: str) -> str:
    """Case- and separator-insensitive form of a key or value: 'Log-Dir' -> 'log_dir'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def suggest(word: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix for ``word``, or '' when no candidate is close."""
    options = list(dict.fromkeys(candidates))
    norm = normalise(word)
    exact = [c for c in options if normalise(c) == norm]
    if exact:
        return f" Did you mean '{exact[0]}'?"
    distances = {c: edit_distance(norm, normalise(c)) for c in options}
    if distances:
        best = min(distances.values())
        if best <= max(1, len(norm) // 4):
            closest = [c for c in options if distances[c] == best]
            if len(closest) == 1:
                return f" Did you mean '{closest[0]}'?"
            return " Did you mean one of " + ", ".join(f"'{c}'" for c in closest[:3]) + "?"
    return did_you_mean(word, options)
