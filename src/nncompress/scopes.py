"""IgnoredScope: which nodes an algorithm must leave alone, by name, regex pattern or op type."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from nncompress.errors import ScopeError


@dataclass
class IgnoredScope:
    """Nodes to skip: exact ``names``, regex ``patterns`` (full match) and op ``types``.

    ``types`` match the backend's op type or the normalized op kind. ``validate=True`` makes a
    name, pattern or type that matches no node an error, so typos never pass silently.
    """

    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    subgraphs: list = field(default_factory=list)
    validate: bool = True

    @classmethod
    def from_nncf_scopes(cls, scopes: str | Iterable[str] | None, validate: bool = True) -> IgnoredScope:
        """Convert NNCF 2.x ``ignored_scopes`` (names, and ``{re}``-prefixed patterns)."""
        if scopes is None:
            return cls(validate=validate)
        if isinstance(scopes, str):
            scopes = [scopes]
        names, patterns = [], []
        for s in scopes:
            if s.startswith("{re}"):
                patterns.append(s[4:])
            else:
                names.append(s)
        return cls(names=names, patterns=patterns, validate=validate)

    def is_empty(self) -> bool:
        return not (self.names or self.patterns or self.types)

    def matches(self, nodes: Iterable, what: str = "ignored_scope") -> set[str]:
        """Names of the nodes matched; raises ``ScopeError`` for entries that match nothing."""
        nodes = list(nodes)
        matched: set[str] = set()
        unmatched: list[str] = []
        by_name = {n.name for n in nodes}
        for name in self.names:
            if name in by_name:
                matched.add(name)
            else:
                unmatched.append(f"name '{name}'")
        for pattern in self.patterns:
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ScopeError(
                    f"{what}: pattern '{pattern}' is not a valid regular expression: {exc}"
                ) from None
            hits = {n.name for n in nodes if rx.fullmatch(n.name) or rx.search(n.name)}
            if hits:
                matched |= hits
            else:
                unmatched.append(f"pattern '{pattern}'")
        for typ in self.types:
            hits = {n.name for n in nodes if typ in (n.op_type, n.kind)}
            if hits:
                matched |= hits
            else:
                unmatched.append(f"type '{typ}'")
        if unmatched and self.validate:
            from nncompress.errors import did_you_mean

            hint = ""
            if self.names and len(unmatched) == 1 and unmatched[0].startswith("name"):
                hint = did_you_mean(unmatched[0][6:-1], by_name)
            raise ScopeError(
                f"{what}: {', '.join(unmatched)} matched no node of the model.{hint} "
                "Print the graph (e.g. `nncompress.torch.trace(model, example).summary()`) to see node names.",
                unmatched,
            )
        return matched
