"""Channel-dependency analysis: which filters must be removed together, and which cannot be removed.

The analysis walks a :class:`~nncompress.graph.Graph` in topological order and follows every
channel of every tensor back to the filter that produced it.

- Each *producer* (a convolution that is not depthwise, a transposed convolution, a fully
  connected layer, an embedding) creates one *atom* per output channel.
- Every tensor carries a :class:`ChannelMap`: its channel axis and, for each position along that
  axis, the atom found there (:data:`FIXED` for channels no filter produced: model inputs,
  constants). Pass-through ops (activations, pooling, dropout, BatchNorm...) keep the map;
  ``flatten``/``reshape`` move it (channel ``c`` becomes features ``c*H*W .. (c+1)*H*W-1``);
  ``transpose``/``permute`` move its axis; ``cat`` on the channel axis concatenates maps (so a
  consumer after a concat reads each part at its own offset).
- Elementwise ops (``+`` of a residual block, ``*`` of a squeeze-excitation gate) *join* the atoms
  they line up: joined atoms form one *unit*, removed or kept together. A squeeze-excitation's
  last convolution is joined to the block's channels this way, its first one reads them.
- *Followers* have per-channel parameters but do not mix channels: BatchNorm, InstanceNorm,
  PReLU, and depthwise convolutions (whose filters are removed when the producer's are).
- Grouped convolutions keep groups of equal size: either whole groups are units (their input
  channels joined with their filters; the layer follows its producer), or the channels at one
  offset of every group are joined (inputs and filters apart; the layer produces and consumes),
  whichever gives more units (:func:`~nncompress.pruning.rules.grouped_conv_mode`).
- *Consumers* read channels: the next convolution's input channels, the next linear layer's
  input features.

Channels that cannot be removed are *fixed*, each with the reason: the first layer, downsampling
convolutions (unless the options allow them), ignored or untargeted layers, channels that reach a
model output, channels read by an op whose use of them cannot be mapped (a reduction over
channels, a split with fixed sizes, attention, a grouped transposed convolution...). Fixing one atom fixes
its whole unit. A *group* is a set of producers connected through joined units: the layers that
must be pruned together (``PruningGroup.describe()`` prints them and why).

Example::

    deps = analyze_channels(graph, prune_first_conv=False, prune_downsample_convs=False)
    print(deps.describe())
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from nncompress.graph import Graph
from nncompress.graph import op_kinds as K
from nncompress.pruning.propagation import FIXED, ChannelMap, LayerChannels, Propagation, SupportFn
from nncompress.pruning.rules import CHANNEL_RULES, opaque, register_channel_rule

__all__ = [
    "CHANNEL_RULES",
    "FIXED",
    "ChannelDependencies",
    "ChannelMap",
    "LayerChannels",
    "PruningGroup",
    "analyze_channels",
    "register_channel_rule",
]


@dataclass
class PruningGroup:
    """Producers whose filters are coupled, with the ops that follow and read their channels."""

    index: int
    units: np.ndarray
    producers: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    couplings: list[str] = field(default_factory=list)
    fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    reasons: Counter = field(default_factory=Counter)

    @property
    def num_channels(self) -> int:
        return len(self.units)

    @property
    def prunable_units(self) -> np.ndarray:
        return self.units[~self.fixed]

    @property
    def num_prunable(self) -> int:
        return int((~self.fixed).sum())

    @property
    def prunable(self) -> bool:
        return self.num_prunable > 0

    def describe(self, label: Callable[[str], str] = str) -> str:
        """Which layers are coupled and why, which channels are left out and why."""
        state = (
            f"{self.num_prunable} of {self.num_channels} channels prunable"
            if self.prunable
            else f"left out ({self.num_channels} channels)"
        )
        lines = [f"Group {self.index}: {state}"]

        def listing(title: str, names: list[str]) -> None:
            if names:
                lines.append(f"  {title}: " + ", ".join(label(n) for n in names))

        listing("filters of", self.producers)
        if self.couplings:
            lines.append("  coupled by: " + ", ".join(self.couplings))
        listing("channels follow in", self.followers)
        listing("read by", self.consumers)
        for reason, count in self.reasons.most_common():
            lines.append(f"  fixed: {count} channel{'s' if count != 1 else ''}: {reason}")
        return "\n".join(lines)


@dataclass
class ChannelDependencies:
    """Result of :func:`analyze_channels`: units, groups and per-op channel roles."""

    graph: Graph
    layers: dict[str, LayerChannels]
    groups: list[PruningGroup]
    unit_group: np.ndarray
    unit_fixed: np.ndarray
    unit_members: list[list[tuple[str, int]]]
    unit_reasons: dict[int, list[str]]
    # (node, output port) -> (channel axis, unit of each channel, FIXED where fixed): the op
    # outputs whose channels the analysis followed (per-channel activation hooks read them)
    tensor_units: dict[tuple[str, int], tuple[int, np.ndarray]] = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return len(self.unit_group)

    @property
    def prunable_groups(self) -> list[PruningGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of(self, node: str) -> PruningGroup | None:
        """The group whose filters ``node`` produces (None when it produces none)."""
        layer = self.layers.get(node)
        if layer is None or layer.out_units is None or len(layer.out_units) == 0:
            return None
        return self.groups[int(self.unit_group[layer.out_units[0]])]

    def producers(self) -> list[LayerChannels]:
        return [lay for lay in self.layers.values() if lay.out_units is not None]

    def short_name(self, node_name: str) -> str:
        """The module path when one module holds only this op, else the node name."""
        scope = self.graph.node(node_name).module_scope
        if scope and self._scope_counts.get(scope, 0) == 1:
            return scope
        return node_name

    def label(self, node_name: str) -> str:
        """``short_name (op kind)``, for printing."""
        return f"{self.short_name(node_name)} ({self.graph.node(node_name).kind})"

    @property
    def _scope_counts(self) -> Counter:
        cached = self.__dict__.get("_scope_count_cache")
        if cached is None:
            cached = Counter(lay.module_scope for lay in self.layers.values() if lay.module_scope)
            self.__dict__["_scope_count_cache"] = cached
        return cached

    def describe(self) -> str:
        """Every group (prunable ones first), then the ops whose channels are read opaquely."""
        ordered = sorted(self.groups, key=lambda g: (not g.prunable, g.index))
        text = "\n".join(g.describe(self.label) for g in ordered)
        n_prunable = len(self.prunable_groups)
        head = f"Channel groups of {self.graph.name}: {len(self.groups)} ({n_prunable} prunable)"
        return f"{head}\n{text}"


# ---------------------------------------------------------------------------------------------
# the analysis
# ---------------------------------------------------------------------------------------------


def analyze_channels(
    graph: Graph,
    *,
    prune_first_conv: bool,
    prune_downsample_convs: bool,
    excluded: Mapping[str, str] | None = None,
    supports: SupportFn | None = None,
) -> ChannelDependencies:
    """Channel groups of ``graph`` (see the module docstring).

    ``excluded`` maps node names whose filters must stay (ignored or untargeted scopes) to the
    reason printed for them. ``supports(node, role)`` lets a backend refuse ops whose layers it
    cannot cut (it returns the reason, or None).
    """
    ctx = Propagation(
        graph,
        prune_first_conv=prune_first_conv,
        prune_downsample_convs=prune_downsample_convs,
        excluded=excluded or {},
        supports=supports,
    )
    for node in graph.topological_order():
        rule = CHANNEL_RULES.get(node.kind)
        if rule is None:
            opaque(f"is an op ({node.op_type}, kind {node.kind}) the channel analysis does not know")(
                ctx, node
            )
        else:
            rule(ctx, node)
        weighted = bool(node.weights) and node.kind in K.WEIGHTED_KINDS
        upstream = weighted or any(
            ctx.weighted_upstream.get((e.src, e.src_port), False) for e in graph.in_edges(node.name)
        )
        for port in ctx.out_ports(node) or [0]:
            ctx.weighted_upstream[(node.name, port)] = upstream
    return _finish(ctx)


def _finish(ctx: Propagation) -> ChannelDependencies:
    atoms = ctx.atoms
    n_atoms = len(atoms.parent)
    roots = np.array([atoms.find(a) for a in range(n_atoms)], dtype=np.int64)
    unique_roots, first = np.unique(roots, return_index=True)
    order = np.argsort(first)  # number units in order of appearance
    unit_of_root = {int(unique_roots[i]): u for u, i in enumerate(order)}
    atom_unit = np.array([unit_of_root[int(r)] for r in roots], dtype=np.int64)
    n_units = len(unique_roots)

    members: list[list[tuple[str, int]]] = [[] for _ in range(n_units)]
    for a in range(n_atoms):
        members[atom_unit[a]].append(atoms.owner[a])
    reasons: dict[int, list[str]] = {}
    for root, why in atoms.reasons.items():
        if why:
            reasons[unit_of_root[atoms.find(root)]] = list(why)
    fixed = np.zeros(n_units, dtype=bool)
    for u in reasons:
        fixed[u] = True

    def to_units(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        arr = np.asarray(arr, dtype=np.int64)
        out = np.full(arr.shape, FIXED, dtype=np.int64)
        ok = arr >= 0
        out[ok] = atom_unit[arr[ok]]
        return out

    for lay in ctx.layers.values():
        lay.out_units = to_units(lay.out_units)
        lay.in_units = to_units(lay.in_units)
        lay.channel_units = to_units(lay.channel_units)

    # groups: units connected through the producers that own them
    parent = list(range(n_units))

    def find(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for lay in ctx.layers.values():
        if lay.out_units is not None and len(lay.out_units):
            base = find(int(lay.out_units[0]))
            for u in lay.out_units[1:].tolist():
                r = find(u)
                if r != base:
                    parent[max(r, base)] = min(r, base)
                    base = min(r, base)
    group_roots = sorted({find(u) for u in range(n_units)})
    group_index = {r: i for i, r in enumerate(group_roots)}
    unit_group = np.array([group_index[find(u)] for u in range(n_units)], dtype=np.int64)
    groups = [PruningGroup(i, np.flatnonzero(unit_group == i)) for i in range(len(group_roots))]
    for g in groups:
        g.fixed = fixed[g.units]
        for u in g.units.tolist():
            for why in reasons.get(u, ()):
                g.reasons[why] += 1

    for lay in ctx.layers.values():
        gids_out = _groups_of(lay.out_units, unit_group)
        gids_follow = _groups_of(lay.channel_units, unit_group)
        gids_in = _groups_of(lay.in_units, unit_group)
        for gi in gids_out:
            groups[gi].producers.append(lay.node)
        for gi in gids_follow:
            groups[gi].followers.append(lay.node)
        if lay.channel_units is None:
            for gi in gids_in:
                groups[gi].consumers.append(lay.node)
    seen: set[tuple[int, str]] = set()
    for atom, what in ctx.couplings:
        gi = int(unit_group[atom_unit[atom]])
        if (gi, what) not in seen:
            seen.add((gi, what))
            groups[gi].couplings.append(what)
    tensor_units = {
        key: (cmap.axis, to_units(cmap.atoms)) for key, cmap in ctx.maps.items() if cmap is not None
    }
    return ChannelDependencies(
        graph=ctx.graph,
        layers=ctx.layers,
        groups=groups,
        unit_group=unit_group,
        unit_fixed=fixed,
        unit_members=members,
        unit_reasons=reasons,
        tensor_units=tensor_units,
    )


def _groups_of(units: np.ndarray | None, unit_group: np.ndarray) -> list[int]:
    if units is None:
        return []
    ok = units[units >= 0]
    if not len(ok):
        return []
    return sorted({int(g) for g in unit_group[ok]})
