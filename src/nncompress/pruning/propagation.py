"""Channel propagation: the state of one channel analysis, and what channel rules use.

Atoms (one per producer channel) are joined with a union-find; every tensor carries a
:class:`ChannelMap`; a rule (:mod:`.rules`) reads its op's input maps through a
:class:`Propagation` and sets the output maps, joins atoms, fixes them (with a reason), and
records the op's role (producer, consumer, follower) in a :class:`LayerChannels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from nncompress.graph import Graph, Node
from nncompress.graph import op_kinds as K

__all__ = [
    "FIXED",
    "AtomSet",
    "ChannelMap",
    "LayerChannels",
    "Propagation",
    "RuleInput",
    "SupportFn",
    "fits",
    "known_shape",
]

#: atom id of a channel that no prunable filter produced (it can never be removed)
FIXED = -1

#: ``supports(node, role)``: ``None`` when the backend can change ``node``'s channels in ``role``
#: ("producer", "consumer" or "follower"), else the reason it cannot
SupportFn = Callable[[Node, str], "str | None"]


@dataclass(frozen=True)
class ChannelMap:
    """The channels of one tensor: their axis and, per position along it, an atom (or FIXED)."""

    axis: int
    atoms: np.ndarray

    def __len__(self) -> int:
        return len(self.atoms)


@dataclass
class LayerChannels:
    """How one op touches prunable channels (``*_units`` hold unit ids, FIXED where fixed).

    - ``out_units``: producer; unit of each output channel (the weight's ``out_axis``).
    - ``in_units``: consumer; unit of each input channel or feature (the weight's ``in_axis``).
    - ``channel_units``: follower; unit of each of its own channels (BatchNorm parameters,
      depthwise filters). A depthwise convolution also has ``in_units``.
    """

    node: str
    kind: str
    module_scope: str
    weight: str | None = None
    out_axis: int = 0
    in_axis: int = 1
    out_units: np.ndarray | None = None
    in_units: np.ndarray | None = None
    channel_units: np.ndarray | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        roles = []
        if self.out_units is not None:
            roles.append("producer")
        if self.channel_units is not None:
            roles.append("follower")
        if self.in_units is not None and self.channel_units is None:
            roles.append("consumer")
        return tuple(roles)

    def units(self) -> np.ndarray:
        """Every unit this op touches (without FIXED)."""
        parts = [u for u in (self.out_units, self.in_units, self.channel_units) if u is not None]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        allu = np.concatenate(parts)
        return np.unique(allu[allu >= 0])


# ---------------------------------------------------------------------------------------------
# union-find over atoms
# ---------------------------------------------------------------------------------------------


class AtomSet:
    """Atoms (one per producer channel) with a union-find over them and fixing reasons."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.owner: list[tuple[str, int]] = []
        self.reasons: dict[int, list[str]] = {}

    def new(self, node: str, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.owner.extend((node, c) for c in range(count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        moved = self.reasons.pop(rb, None)
        if moved:
            self.reasons.setdefault(ra, []).extend(moved)

    def fix(self, a: int, reason: str) -> None:
        bucket = self.reasons.setdefault(self.find(a), [])
        if reason not in bucket:
            bucket.append(reason)


# ---------------------------------------------------------------------------------------------
# propagation
# ---------------------------------------------------------------------------------------------

Shape = tuple  # tuple[int | None, ...]


@dataclass
class RuleInput:
    """One input of an op as a rule sees it: port, producing node, channel map, traced shape."""

    port: int
    src: str
    map: ChannelMap | None
    shape: Shape | None


class Propagation:
    """State of one analysis; channel rules read inputs and set output maps through it."""

    def __init__(
        self,
        graph: Graph,
        *,
        prune_first_conv: bool,
        prune_downsample_convs: bool,
        excluded: Mapping[str, str],
        supports: SupportFn | None,
    ):
        self.graph = graph
        self.prune_first_conv = prune_first_conv
        self.prune_downsample_convs = prune_downsample_convs
        self.excluded = dict(excluded)
        self.supports_fn = supports
        self.atoms = AtomSet()
        self.maps: dict[tuple[str, int], ChannelMap | None] = {}
        self.weighted_upstream: dict[tuple[str, int], bool] = {}
        self.layers: dict[str, LayerChannels] = {}
        self.slots: dict[tuple[str, str], np.ndarray] = {}
        self.couplings: list[tuple[int, str]] = []

    # -- helpers for rules ------------------------------------------------------------------
    def label(self, node: Node) -> str:
        return f"{node.kind} '{node.name}'"

    def inputs(self, node: Node) -> list[RuleInput]:
        return [
            RuleInput(e.dst_port, e.src, self.maps.get((e.src, e.src_port)), e.tensor.shape)
            for e in self.graph.in_edges(node.name)
        ]

    def out_shape(self, node: Node, port: int = 0) -> Shape | None:
        for e in self.graph.out_edges(node.name, port):
            if e.tensor.shape is not None:
                return tuple(e.tensor.shape)
        return None

    def out_ports(self, node: Node) -> list[int]:
        return sorted({e.src_port for e in self.graph.out_edges(node.name)})

    def set_out(self, node: Node, port: int, cmap: ChannelMap | None) -> None:
        self.maps[(node.name, port)] = cmap

    def set_all_outputs(self, node: Node, cmap: ChannelMap | None) -> None:
        """``cmap`` on every output port whose shape still has its channels at ``cmap.axis``."""
        for port in self.out_ports(node) or [0]:
            shape = self.out_shape(node, port)
            if cmap is not None and not fits(cmap, shape):
                self.fix_map(cmap, f"output of {self.label(node)} changes the channel dimension")
                self.set_out(node, port, None)
            else:
                self.set_out(node, port, cmap)

    def fix_map(self, cmap: ChannelMap | None, reason: str) -> None:
        if cmap is None:
            return
        for a in np.unique(cmap.atoms):
            if a >= 0:
                self.atoms.fix(int(a), reason)

    def fix_inputs(self, node: Node, reason: str) -> None:
        for inp in self.inputs(node):
            self.fix_map(inp.map, f"read by {self.label(node)}, which {reason}")

    def join(self, node: Node, a: np.ndarray, b: np.ndarray, source: str | None = None) -> None:
        """Join two equal-length atom arrays position by position (FIXED fixes the other side;
        ``source`` says where the fixed channels come from)."""
        for x, y in zip(a.tolist(), b.tolist()):
            if x >= 0 and y >= 0:
                if self.atoms.find(x) != self.atoms.find(y):
                    self.atoms.union(x, y)
                    self.couplings.append((x, f"{node.kind} '{node.name}'"))
            elif x >= 0 or y >= 0:
                self.atoms.fix(
                    x if x >= 0 else y,
                    f"joined by {self.label(node)} with channels that cannot be pruned"
                    + (f" ({source})" if source else ""),
                )

    def supports(self, node: Node, role: str) -> str | None:
        if self.supports_fn is None:
            return None
        return self.supports_fn(node, role)

    def bind(self, node: Node, weight: str | None, role: str, atoms: np.ndarray) -> np.ndarray:
        """Atoms of a weight's ``role`` axis: a weight used by several ops (a module called twice)
        gets the atoms of its first use, joined with those of the later ones."""
        if weight is None:
            return atoms
        key = (weight, role)
        first = self.slots.get(key)
        if first is None:
            self.slots[key] = atoms
            return atoms
        if len(first) == len(atoms):
            self.join(node, first, atoms, source=f"another use of the weight '{weight}'")
        else:
            self.fix_map(ChannelMap(0, first), f"weight '{weight}' is used with different channel counts")
            self.fix_map(ChannelMap(0, atoms), f"weight '{weight}' is used with different channel counts")
        return first

    def layer(self, node: Node, weight: str | None = None) -> LayerChannels:
        lay = self.layers.get(node.name)
        if lay is None:
            lay = LayerChannels(node.name, node.kind, node.module_scope, weight)
            self.layers[node.name] = lay
        return lay

    # -- roles ----------------------------------------------------------------------------------
    def produce(
        self, node: Node, count: int, weight: str | None, out_axis: int, data_port: int | None
    ) -> np.ndarray:
        """New atoms for ``count`` filters of ``node`` (fixed when the options or backend say so)."""
        shared = self.slots.get((weight, "out")) if weight is not None else None
        atoms = shared if shared is not None and len(shared) == count else self.atoms.new(node.name, count)
        atoms = self.bind(node, weight, "out", atoms)
        lay = self.layer(node, weight)
        lay.out_units, lay.out_axis = atoms, out_axis
        for reason in self._producer_exclusions(node, data_port):
            for a in atoms.tolist():
                self.atoms.fix(a, reason)
        return atoms

    def _producer_exclusions(self, node: Node, data_port: int | None) -> list[str]:
        reasons = []
        if node.name in self.excluded:
            reasons.append(self.excluded[node.name])
        unsupported = self.supports(node, "producer")
        if unsupported:
            reasons.append(unsupported)
        if not self.prune_first_conv and data_port is not None:
            upstream = [
                self.weighted_upstream.get((e.src, e.src_port), False)
                for e in self.graph.in_edges(node.name)
                if e.dst_port == data_port
            ]
            if not any(upstream):
                reasons.append(f"first layer '{node.name}' (prune_first_conv is false)")
        stride = node.attrs.get("stride")
        if (
            not self.prune_downsample_convs
            and node.kind in K.CONVOLUTION_KINDS
            and not node.attrs.get("transpose")
            and isinstance(stride, tuple)
            and any(isinstance(s, int) and s > 1 for s in stride)
        ):
            reasons.append(
                f"downsampling convolution '{node.name}' with stride {stride} (prune_downsample_convs is false)"
            )
        return reasons

    def consume(
        self, node: Node, inp: RuleInput | None, count: int, axis: int, weight: str | None, in_axis: int
    ) -> None:
        """``node`` reads ``count`` channels of ``inp`` on ``axis`` (its weight's ``in_axis``)."""
        fixed = np.full(count, FIXED, dtype=np.int64)
        if inp is None or inp.map is None:
            # another call of the same weight may read prunable channels: they must stay too
            self.bind(node, weight, "in", fixed)
            return
        cmap = inp.map
        if cmap.axis != axis or len(cmap) != count:
            self.fix_map(
                cmap,
                f"read by {self.label(node)} on axis {axis} ({count} channels), not where they are "
                f"(axis {cmap.axis}, {len(cmap)} channels)",
            )
            self.bind(node, weight, "in", fixed)
            return
        unsupported = self.supports(node, "consumer")
        if unsupported:
            self.fix_map(cmap, unsupported)
            return
        atoms = self.bind(node, weight, "in", cmap.atoms)
        lay = self.layer(node, weight)
        lay.in_units, lay.in_axis = atoms, in_axis

    def follow(self, node: Node, cmap: ChannelMap, weight: str | None, axis: int = 0) -> np.ndarray | None:
        """``node`` has per-channel parameters along ``cmap``; None when the backend cannot cut them."""
        unsupported = self.supports(node, "follower")
        if unsupported:
            self.fix_map(cmap, unsupported)
            return None
        atoms = self.bind(node, weight, "channels", cmap.atoms)
        lay = self.layer(node, weight)
        lay.channel_units, lay.out_axis = atoms, axis
        return atoms


def fits(cmap: ChannelMap, shape: Shape | None) -> bool:
    """Whether a tensor of ``shape`` has ``cmap``'s channels at ``cmap.axis``."""
    return shape is not None and 0 <= cmap.axis < len(shape) and shape[cmap.axis] == len(cmap)


def known_shape(shape: Shape | None) -> bool:
    """Whether every dimension of ``shape`` is a known integer."""
    return shape is not None and all(isinstance(d, int) for d in shape)
