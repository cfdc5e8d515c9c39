"""Small subgraph patterns over the backend-neutral ``Graph``, written as data, and a matcher.

A ``Pattern`` is a little DAG of ``PatternNode`` (each a set of op kinds). It is matched against
a ``Graph`` as an *induced* subgraph: between matched ops, the graph has exactly the pattern's
edges. Matching is used for two things:

- fusion: ops a runtime executes as one (Conv + BatchNorm + ReLU); no quantizer may sit between
  them (``nncompress.quantization.fusion``);
- known blocks to leave in float (an SE block's convolutions, attention outputs).

Patterns are written in JSON (see ``nncompress/hardware/data/fusion.json``) with three sections:

``classes``
    named alternatives: ``"activation": ["atomic_activation", "swish", "Gelu"]``. An item is a
    class name, a graph name, or else an op kind.
``graphs``
    DAG building blocks: ``{"nodes": {"x": "*", "s": "Sigmoid", "m": "Multiply"},
    "edges": [["x", "s"], ["s", "m"], ["x", "m"]]}``. ``"*"`` is an *anchor*: an op outside the
    block that feeds it. A node may be an object ``{"kinds": ref, "optional": true,
    "exclude": true}``: optional nodes may be absent (their neighbours then connect directly);
    excluded nodes must match but are not part of the result.
pattern entries
    ``{"name": ..., "chain": ["linear", "Add?", "batch_norm?", "activation?"]}`` (steps one
    after the other, ``?`` = optional; a step naming a graph is joined through its anchor) or
    ``{"name": ..., "graph": "swish"}``; optional ``"role"``, ``"devices"``, ``"model_types"``.

Example::

    lib = PatternLibrary.from_dict({"classes": {"act": ["Relu", "Clamp"]},
                                    "patterns": [{"name": "conv_act", "chain": ["Convolution", "act"]}]})
    matches = find_matches(graph, lib.expand("patterns"))
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nncompress.graph.graph import Graph, Node

ANCHOR = "*"


class PatternError(ValueError):
    """A pattern description is malformed (a bug in a data file, not in the user's model)."""


@dataclass(frozen=True)
class PatternNode:
    """One op of a pattern: any op whose kind is in ``kinds`` (any op at all when empty).

    ``external``: the op is outside the pattern and only anchors it (NNCF's "non-pattern" node);
    ``exclude``: the op must match but is not part of the result.
    ``attrs``: required layer attributes, ``(name, allowed values)`` pairs.
    """

    label: str
    kinds: frozenset[str] = frozenset()
    external: bool = False
    exclude: bool = False
    attrs: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def accepts(self, node: Node) -> bool:
        if self.kinds and node.kind not in self.kinds:
            return False
        return all(node.attrs.get(name) in allowed for name, allowed in self.attrs)


@dataclass(frozen=True)
class Pattern:
    """A DAG of ``PatternNode``; ``edges`` are ``(from, to)`` indices into ``nodes``.

    ``role`` is free text for the user of the match (fusion uses ``"fused"`` and
    ``"activation"``); ``devices``/``model_types`` limit where it applies (None = everywhere).
    """

    name: str
    nodes: tuple[PatternNode, ...]
    edges: tuple[tuple[int, int], ...]
    role: str = "fused"
    devices: frozenset[str] | None = None
    model_types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.nodes)
        for a, b in self.edges:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise PatternError(f"pattern '{self.name}': bad edge ({a}, {b})")
        if not any(not p.external for p in self.nodes):
            raise PatternError(f"pattern '{self.name}' has no node of its own")

    @property
    def size(self) -> int:
        """Number of ops the pattern claims (anchors not counted): longer patterns match first."""
        return sum(1 for p in self.nodes if not p.external)

    def applies_to(self, device: str | None = None, model_type: str | None = None) -> bool:
        if self.devices is not None and (device is None or device not in self.devices):
            return False
        return self.model_types is None or (model_type is not None and model_type in self.model_types)

    def describe(self) -> str:
        labels = [("*" if p.external else "") + p.label for p in self.nodes]
        arrows = ", ".join(f"{labels[a]}->{labels[b]}" for a, b in self.edges)
        return f"{self.name}: {arrows or labels[0]}"


@dataclass(frozen=True)
class Match:
    """Ops of the graph matched by ``pattern``, in topological order (anchors and excluded left out)."""

    pattern: Pattern
    nodes: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.nodes[0]

    @property
    def last(self) -> str:
        return self.nodes[-1]


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------


@dataclass
class _GraphIndex:
    nodes: dict[str, Node]
    succ: dict[str, set[str]]
    pred: dict[str, set[str]]
    order: dict[str, int]
    by_kind: dict[str, list[str]]


def _index(graph: Graph, absent: Collection[str]) -> _GraphIndex:
    absent = set(absent)
    topo = [n for n in graph.topological_order() if n.name not in absent]
    succ: dict[str, set[str]] = {n.name: set() for n in topo}
    pred: dict[str, set[str]] = {n.name: set() for n in topo}
    for e in graph.edges:
        if e.src in succ and e.dst in succ:
            succ[e.src].add(e.dst)
            pred[e.dst].add(e.src)
    by_kind: dict[str, list[str]] = {}
    for n in topo:
        by_kind.setdefault(n.kind, []).append(n.name)
    return _GraphIndex(
        nodes={n.name: n for n in topo},
        succ=succ,
        pred=pred,
        order={n.name: i for i, n in enumerate(topo)},
        by_kind=by_kind,
    )


def _candidates(index: _GraphIndex, pnode: PatternNode) -> list[str]:
    if not pnode.kinds:
        return list(index.nodes)
    names = [name for kind in pnode.kinds for name in index.by_kind.get(kind, ())]
    names.sort(key=index.order.__getitem__)
    return [n for n in names if pnode.accepts(index.nodes[n])]


def _search_plan(pattern: Pattern, index: _GraphIndex) -> tuple[int, list[tuple[int, int, bool]]]:
    """Root node and, for every other pattern node, an already-placed neighbour to reach it from."""
    own = [i for i, p in enumerate(pattern.nodes) if not p.external]
    root = min(own, key=lambda i: (len(_candidates(index, pattern.nodes[i])), i))
    adj: dict[int, list[tuple[int, bool]]] = {i: [] for i in range(len(pattern.nodes))}
    for a, b in pattern.edges:
        adj[a].append((b, True))  # b is a successor of a
        adj[b].append((a, False))
    plan: list[tuple[int, int, bool]] = []
    seen = {root}
    frontier = [root]
    while frontier:
        nxt = []
        for r in frontier:
            for q, forward in sorted(adj[r]):
                if q not in seen:
                    seen.add(q)
                    plan.append((q, r, forward))
                    nxt.append(q)
        frontier = nxt
    if len(seen) != len(pattern.nodes):
        raise PatternError(f"pattern '{pattern.name}' is not connected")
    return root, plan


def _embeddings(pattern: Pattern, index: _GraphIndex) -> Iterator[dict[int, str]]:
    root, plan = _search_plan(pattern, index)
    edges = set(pattern.edges)
    mapping: dict[int, str] = {}
    used: set[str] = set()

    def consistent(q: int, g: str) -> bool:
        for p, h in mapping.items():
            if ((q, p) in edges) != (h in index.succ[g]) or ((p, q) in edges) != (g in index.succ[h]):
                return False
        return True

    def extend(step: int) -> Iterator[dict[int, str]]:
        if step == len(plan):
            yield dict(mapping)
            return
        q, r, forward = plan[step]
        pnode = pattern.nodes[q]
        pool = index.succ[mapping[r]] if forward else index.pred[mapping[r]]
        for g in sorted(pool, key=index.order.__getitem__):
            if g in used or not pnode.accepts(index.nodes[g]) or not consistent(q, g):
                continue
            mapping[q] = g
            used.add(g)
            yield from extend(step + 1)
            del mapping[q]
            used.discard(g)

    for g in _candidates(index, pattern.nodes[root]):
        mapping[root] = g
        used.add(g)
        yield from extend(0)
        mapping.clear()
        used.clear()


def _is_strict(pattern: Pattern, index: _GraphIndex, mapping: dict[int, str]) -> bool:
    """The matched ops form a closed block: data enters only at its first ops, leaves only at its last.

    A first op (no predecessor in the pattern) may not feed ops outside the match; a last op
    (no successor) may not read ops outside it; any other op may do neither. Anchors are free.
    """
    inside = set(mapping.values())
    has_pred = {b for _, b in pattern.edges}
    has_succ = {a for a, _ in pattern.edges}
    for i, g in mapping.items():
        if pattern.nodes[i].external:
            continue
        ext_out = any(s not in inside for s in index.succ[g])
        ext_in = any(p not in inside for p in index.pred[g])
        starting = i not in has_pred and i in has_succ
        last = i in has_pred and i not in has_succ
        if starting and ext_out:
            return False
        if last and ext_in:
            return False
        middle = i in has_pred and i in has_succ
        if middle and (ext_out or ext_in):
            return False
    return True


def find_matches(
    graph: Graph,
    patterns: Iterable[Pattern],
    *,
    strict: bool = True,
    absent: Collection[str] = (),
) -> list[Match]:
    """Non-overlapping matches of ``patterns`` in ``graph``; longer patterns are matched first.

    ``absent`` names ops treated as not being in the graph (constants, shape computations), so
    a bias ``Add`` whose second input is a constant looks like a one-input op. With ``strict``
    a match must be a closed block (see ``_is_strict``). Among patterns of equal size the
    earlier one wins; an op belongs to at most one match.
    """
    index = _index(graph, absent)
    ordered = sorted(enumerate(patterns), key=lambda ip: (-ip[1].size, ip[0]))
    taken: set[str] = set()
    found: list[Match] = []
    for _, pattern in ordered:
        if pattern.size < 2 and strict:
            continue
        for mapping in _embeddings(pattern, index):
            if strict and not _is_strict(pattern, index, mapping):
                continue
            own = [
                g for i, g in mapping.items() if not (pattern.nodes[i].external or pattern.nodes[i].exclude)
            ]
            if not own or any(g in taken for g in own):
                continue
            taken.update(own)
            found.append(Match(pattern, tuple(sorted(own, key=index.order.__getitem__))))
    found.sort(key=lambda m: index.order[m.first])
    return found


# ---------------------------------------------------------------------------------------------
# patterns as data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fragment:
    """A piece of a chain: its nodes and edges, which of them take the incoming tensor, its exit."""

    nodes: tuple[PatternNode, ...]
    edges: tuple[tuple[int, int], ...]
    entries: tuple[int, ...]
    exit: int | None
    anchor: PatternNode | None = None  # kept as an external node when the fragment starts a chain


@dataclass
class PatternLibrary:
    """Named classes and graphs plus pattern sections, loaded from a JSON-like dict."""

    classes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    graphs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sections: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatternLibrary:
        sections = {k: v for k, v in data.items() if isinstance(v, list)}
        lib = cls(dict(data.get("classes", {})), dict(data.get("graphs", {})), sections)
        overlap = set(lib.classes) & set(lib.graphs)
        if overlap:
            raise PatternError(f"names used both as class and graph: {sorted(overlap)}")
        return lib

    # -- references ------------------------------------------------------------------------
    def kinds_of(self, ref: str, _seen: frozenset[str] = frozenset()) -> frozenset[str] | None:
        """The op kinds a reference stands for, or None if it includes a graph."""
        if ref in self.graphs:
            return None
        if ref in self.classes:
            if ref in _seen:
                raise PatternError(f"class '{ref}' refers to itself")
            out: set[str] = set()
            for item in self.classes[ref]:
                sub = self.kinds_of(item, _seen | {ref})
                if sub is None:
                    return None
                out |= sub
            return frozenset(out)
        return frozenset({ref})

    def _alternatives(self, ref: str, _seen: frozenset[str] = frozenset()) -> list[_Fragment]:
        if ref in self.graphs:
            return self._graph_fragments(ref, self.graphs[ref])
        kinds = self.kinds_of(ref)
        if kinds is not None:
            return [_Fragment((PatternNode(ref, kinds),), (), (0,), 0)]
        if ref in _seen:
            raise PatternError(f"class '{ref}' refers to itself")
        plain: set[str] = set()
        out: list[_Fragment] = []
        for item in self.classes[ref]:
            sub = self.kinds_of(item)
            if sub is not None:
                plain |= sub
            else:
                out.extend(self._alternatives(item, _seen | {ref}))
        if plain:
            out.insert(0, _Fragment((PatternNode(ref, frozenset(plain)),), (), (0,), 0))
        return out

    def _node(self, label: str, spec: Any, where: str) -> tuple[PatternNode, bool]:
        if isinstance(spec, str):
            spec = {"kinds": spec}
        if not isinstance(spec, Mapping) or "kinds" not in spec:
            raise PatternError(f"{where}: node '{label}' needs a kind reference")
        unknown = set(spec) - {"kinds", "optional", "exclude", "attrs"}
        if unknown:
            raise PatternError(f"{where}: node '{label}' has unknown keys {sorted(unknown)}")
        ref = spec["kinds"]
        attrs = tuple((k, tuple(v)) for k, v in sorted(dict(spec.get("attrs", {})).items()))
        if ref == ANCHOR:
            return PatternNode(label, frozenset(), external=True), False
        kinds = self.kinds_of(ref)
        if kinds is None:
            raise PatternError(f"{where}: node '{label}' must name op kinds, not a graph ('{ref}')")
        node = PatternNode(label, kinds, exclude=bool(spec.get("exclude", False)), attrs=attrs)
        return node, bool(spec.get("optional", False))

    def _graph_variants(self, name: str, spec: Mapping[str, Any]) -> list[Pattern]:
        """Concrete DAGs of a graph description, one per choice of its optional nodes."""
        where = f"graph '{name}'"
        labels = list(spec.get("nodes", {}))
        parsed = [self._node(lbl, spec["nodes"][lbl], where) for lbl in labels]
        pos = {lbl: i for i, lbl in enumerate(labels)}
        try:
            edges = [(pos[a], pos[b]) for a, b in spec.get("edges", [])]
        except KeyError as exc:
            raise PatternError(f"{where}: edge names unknown node {exc}") from None
        optional = [i for i, (_, opt) in enumerate(parsed) if opt]
        variants = []
        for drop_count in range(len(optional) + 1):
            for dropped in itertools.combinations(optional, drop_count):
                keep_edges = set(edges)
                for d in dropped:
                    ins = [a for a, b in keep_edges if b == d]
                    outs = [b for a, b in keep_edges if a == d]
                    keep_edges = {(a, b) for a, b in keep_edges if d not in (a, b)}
                    keep_edges |= {(a, b) for a in ins for b in outs}
                kept = [i for i in range(len(parsed)) if i not in dropped]
                remap = {old: new for new, old in enumerate(kept)}
                variants.append(
                    Pattern(
                        name,
                        tuple(parsed[i][0] for i in kept),
                        tuple(sorted((remap[a], remap[b]) for a, b in keep_edges)),
                    )
                )
        return variants

    def _graph_fragments(self, name: str, spec: Mapping[str, Any]) -> list[_Fragment]:
        out = []
        for variant in self._graph_variants(name, spec):
            anchors = [i for i, p in enumerate(variant.nodes) if p.external]
            if len(anchors) != 1:
                raise PatternError(f"graph '{name}' used as a chain step needs exactly one anchor '*'")
            a = anchors[0]
            own = [i for i in range(len(variant.nodes)) if i != a]
            remap = {old: new for new, old in enumerate(own)}
            sinks = [i for i in own if not any(x == i for x, _ in variant.edges)]
            out.append(
                _Fragment(
                    tuple(variant.nodes[i] for i in own),
                    tuple((remap[x], remap[y]) for x, y in variant.edges if x != a and y != a),
                    tuple(sorted(remap[y] for x, y in variant.edges if x == a)),
                    remap[sinks[0]] if len(sinks) == 1 else None,
                    variant.nodes[a],
                )
            )
        return out

    # -- expansion -------------------------------------------------------------------------
    def expand_entry(self, entry: Mapping[str, Any]) -> list[Pattern]:
        """All concrete patterns one entry stands for."""
        name = entry.get("name")
        if not name:
            raise PatternError(f"pattern entry without a name: {dict(entry)}")
        unknown = set(entry) - {"name", "chain", "graph", "role", "devices", "model_types", "doc"}
        if unknown:
            raise PatternError(f"pattern '{name}': unknown keys {sorted(unknown)}")
        devices = frozenset(entry["devices"]) if "devices" in entry else None
        model_types = frozenset(entry["model_types"]) if "model_types" in entry else None
        role = entry.get("role", "fused")
        if ("chain" in entry) == ("graph" in entry):
            raise PatternError(f"pattern '{name}' needs exactly one of 'chain' or 'graph'")
        if "graph" in entry:
            spec = entry["graph"]
            if isinstance(spec, str):
                if spec not in self.graphs:
                    raise PatternError(f"pattern '{name}': unknown graph '{spec}'")
                spec = self.graphs[spec]
            return [
                Pattern(name, v.nodes, v.edges, role, devices, model_types)
                for v in self._graph_variants(name, spec)
            ]
        steps = []
        for raw in entry["chain"]:
            ref, optional = (raw[:-1], True) if raw.endswith("?") else (raw, False)
            alts: list[_Fragment | None] = list(self._alternatives(ref))
            if optional:
                alts.append(None)
            steps.append(alts)
        patterns = []
        for choice in itertools.product(*steps):
            built = _join([f for f in choice if f is not None], name)
            if built is not None:
                nodes, edges = built
                patterns.append(Pattern(name, nodes, edges, role, devices, model_types))
        return patterns

    def expand(self, section: str) -> tuple[Pattern, ...]:
        """Every concrete pattern of a section, in the order written."""
        return tuple(p for entry in self.sections.get(section, ()) for p in self.expand_entry(entry))


def _join(
    fragments: list[_Fragment], name: str
) -> tuple[tuple[PatternNode, ...], tuple[tuple[int, int], ...]] | None:
    if not fragments:
        return None
    nodes: list[PatternNode] = []
    edges: list[tuple[int, int]] = []
    tail: int | None = None
    for k, frag in enumerate(fragments):
        offset = len(nodes)
        nodes.extend(frag.nodes)
        edges.extend((a + offset, b + offset) for a, b in frag.edges)
        if tail is None:
            if frag.anchor is not None:
                nodes.append(frag.anchor)
                anchor = len(nodes) - 1
                edges.extend((anchor, e + offset) for e in frag.entries)
        else:
            edges.extend((tail, e + offset) for e in frag.entries)
        if frag.exit is None and k != len(fragments) - 1:
            raise PatternError(f"pattern '{name}': a step with several outputs must come last")
        tail = None if frag.exit is None else frag.exit + offset
    if sum(1 for n in nodes if not n.external) < 2:
        return None  # a single op fuses with nothing
    return tuple(nodes), tuple(edges)
