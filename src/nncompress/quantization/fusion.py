"""Fused groups: ops a runtime executes as one, so no quantizer may sit between them.

The patterns are data (``nncompress/hardware/data/fusion.json``), matched with
``nncompress.graph.patterns.find_matches``: Convolution/MatMul (+ bias Add) + BatchNorm +
activation, BatchNorm + activation, Add + activation (a residual add and its ReLU), MVN with its
scale and shift, activations written as several ops (x * sigmoid(x), x * relu6(x + 3) / 6, erf
GELU, decomposed softmax), input preprocessing after a model input... A match must be a closed
block (data enters at its first ops and leaves at its last), so Conv -> bias Add fuses but
Conv -> residual Add (whose other input comes from another branch) does not.

A group's first op decides whether the group's inputs are quantized (``FusedGroup.primary``),
except for groups with role ``activation``, which are never quantized at their inputs.

Also here: the ops left in float by "ignored patterns" (an SE block's convolutions; with
``model_type=transformer`` the attention output MatMul) and the non-activation ops (constants and
shape computations) that neither fusion nor quantization may see as data.

Example::

    groups = find_fused_groups(graph, load_rules("CPU"))
    print(groups.describe())
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from nncompress.graph import op_kinds
from nncompress.graph.graph import Graph
from nncompress.graph.patterns import find_matches
from nncompress.hardware.rules import HardwareRules

ROLE_FUSED = "fused"
ROLE_ACTIVATION = "activation"


@dataclass(frozen=True)
class FusedGroup:
    """Ops executed as one, in topological order; ``pattern`` names the rule that matched."""

    pattern: str
    nodes: tuple[str, ...]
    role: str = ROLE_FUSED

    @property
    def primary(self) -> str:
        """The first op: its kind decides whether the group's inputs are quantized."""
        return self.nodes[0]

    @property
    def last(self) -> str:
        """The last op: a quantizer for a later op sits at its output."""
        return self.nodes[-1]

    @property
    def quantizable(self) -> bool:
        return self.role != ROLE_ACTIVATION


@dataclass(frozen=True)
class FusionResult:
    groups: tuple[FusedGroup, ...] = ()
    group_of: Mapping[str, FusedGroup] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.groups:
            return "no fused groups"
        return "\n".join(f"{g.pattern}: " + " -> ".join(g.nodes) for g in self.groups)


@dataclass(frozen=True)
class NonActivation:
    """Ops whose outputs are not activations: constants (and ops computing only from them) and
    shape computations (ShapeOf and ops computing only from shapes and constants)."""

    constant: frozenset[str] = frozenset()
    shape: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.constant | self.shape

    def why(self, name: str) -> str | None:
        if name in self.constant:
            return "constant input (not an activation)"
        if name in self.shape:
            return "shape computation, never quantized"
        return None


def find_non_activations(graph: Graph) -> NonActivation:
    """Constant and shape-computation ops of ``graph`` (see ``NonActivation``)."""
    constant: set[str] = set()
    shape: set[str] = set()
    for node in graph.topological_order():
        srcs = {e.src for e in graph.in_edges(node.name)}
        if node.kind == op_kinds.CONSTANT:
            constant.add(node.name)
        elif node.kind in op_kinds.SHAPE_KINDS:
            shape.add(node.name)
        elif node.kind in (op_kinds.INPUT, op_kinds.OUTPUT):
            continue
        elif not srcs:
            if not node.weights:
                constant.add(node.name)  # generated values (arange, zeros...)
        elif srcs <= constant:
            constant.add(node.name)
        elif srcs <= constant | shape:
            shape.add(node.name)
    return NonActivation(frozenset(constant), frozenset(shape))


def find_fused_groups(
    graph: Graph,
    rules: HardwareRules,
    model_type: str | None = None,
    *,
    non_activation: NonActivation | None = None,
) -> FusionResult:
    """Groups of ops that ``rules.device`` runs fused (patterns for this device and model type)."""
    na = non_activation if non_activation is not None else find_non_activations(graph)
    matches = find_matches(graph, rules.fusion_patterns_for(model_type), strict=True, absent=na.all)
    groups = tuple(FusedGroup(m.pattern.name, m.nodes, m.pattern.role) for m in matches)
    return FusionResult(groups, {n: g for g in groups for n in g.nodes})


def find_ignored_by_patterns(
    graph: Graph,
    rules: HardwareRules,
    model_type: str | None = None,
    *,
    non_activation: NonActivation | None = None,
    absent: Collection[str] = (),
) -> dict[str, str]:
    """Ops that the device's ignored patterns leave in float: op name -> pattern name."""
    na = non_activation if non_activation is not None else find_non_activations(graph)
    matches = find_matches(
        graph, rules.ignored_patterns_for(model_type), strict=False, absent=na.all | frozenset(absent)
    )
    return {n: m.pattern.name for m in matches for n in m.nodes}
