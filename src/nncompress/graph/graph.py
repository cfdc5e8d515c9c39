"""Graph, Node and Edge: the one structure the torch, ONNX and OpenVINO backends all build.

Nodes are operations with a stable name and a normalized op kind (see ``op_kinds``); edges are
tensors between an output port of one node and an input port of another, with shape and dtype.
Weights are not nodes: a weighted op records them in ``Node.weights`` keyed by input port, so
algorithms can find "the weight of this convolution" without knowing the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nncompress.errors import GraphError

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True)
class TensorInfo:
    """Shape (None where unknown or dynamic) and dtype name of a tensor ("float32", "int64", ...)."""

    shape: tuple[int | None, ...] | None = None
    dtype: str = "float32"

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


@dataclass(frozen=True)
class WeightInfo:
    """A constant (trainable) input of an op.

    ``name`` is the backend's handle (torch: the parameter path ``features.0.weight``; ONNX: the
    initializer name; OpenVINO: the Constant's friendly name). ``out_channel_axis`` is the axis of
    output channels (0 for Conv/Linear weights, 1 for ConvTranspose), ``in_channel_axis`` the axis
    that meets the activation's channels.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    out_channel_axis: int = 0
    in_channel_axis: int = 1


@dataclass
class Node:
    """One operation call.

    ``name`` is unique and stable across runs (torch: module scope + op + call index, as NNCF
    writes it, e.g. ``ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/conv2d_0``).
    ``op_type`` is the backend's own op name, ``kind`` the normalized op kind shared by all
    backends. ``attrs`` holds layer attributes (``in_channels``, ``out_channels``, ``groups``,
    ``kernel_size``, ``stride``, ``transpose``, ``axis``...). ``weights`` maps an input port to
    the weight fed there; ``bias`` names the bias constant if the op has one.
    """

    name: str
    op_type: str
    kind: str
    module_scope: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[int, WeightInfo] = field(default_factory=dict)
    bias: str | None = None

    @property
    def has_weights(self) -> bool:
        return bool(self.weights)


@dataclass(frozen=True)
class Edge:
    """A tensor from ``src``'s output ``src_port`` to ``dst``'s input ``dst_port``."""

    src: str
    src_port: int
    dst: str
    dst_port: int
    tensor: TensorInfo = field(default_factory=TensorInfo)


class Graph:
    """A directed acyclic graph of ``Node`` objects in execution (topological) order."""

    def __init__(self, name: str = "model"):
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._in: dict[str, list[Edge]] = {}
        self._out: dict[str, list[Edge]] = {}

    # -- building -------------------------------------------------------------------------
    def add_node(self, node: Node) -> Node:
        if node.name in self._nodes:
            raise GraphError(f"Graph '{self.name}': a node named '{node.name}' already exists")
        self._nodes[node.name] = node
        self._in[node.name] = []
        self._out[node.name] = []
        return node

    def add_edge(self, edge: Edge) -> Edge:
        for end in (edge.src, edge.dst):
            if end not in self._nodes:
                raise GraphError(
                    f"Graph '{self.name}': edge {edge.src}->{edge.dst} names unknown node '{end}'"
                )
        self._in[edge.dst].append(edge)
        self._in[edge.dst].sort(key=lambda e: e.dst_port)
        self._out[edge.src].append(edge)
        return edge

    def remove_node(self, name: str) -> None:
        """Remove a node and every edge that touches it."""
        self.node(name)
        for e in list(self._in[name]):
            self._out[e.src].remove(e)
        for e in list(self._out[name]):
            self._in[e.dst].remove(e)
        del self._in[name], self._out[name], self._nodes[name]

    # -- queries --------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise GraphError(f"Graph '{self.name}' has no node '{name}'") from None

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    @property
    def edges(self) -> list[Edge]:
        return [e for name in self._nodes for e in self._out[name]]

    def in_edges(self, name: str) -> list[Edge]:
        self.node(name)
        return list(self._in[name])

    def out_edges(self, name: str, port: int | None = None) -> list[Edge]:
        self.node(name)
        return [e for e in self._out[name] if port is None or e.src_port == port]

    def predecessors(self, name: str) -> list[Node]:
        return [self._nodes[e.src] for e in self.in_edges(name)]

    def successors(self, name: str) -> list[Node]:
        seen: dict[str, Node] = {}
        for e in self.out_edges(name):
            seen.setdefault(e.dst, self._nodes[e.dst])
        return list(seen.values())

    def nodes_of_kind(self, *kinds: str) -> list[Node]:
        wanted = set(kinds)
        return [n for n in self._nodes.values() if n.kind in wanted]

    def input_nodes(self) -> list[Node]:
        from nncompress.graph import op_kinds

        return self.nodes_of_kind(op_kinds.INPUT)

    def output_nodes(self) -> list[Node]:
        from nncompress.graph import op_kinds

        return self.nodes_of_kind(op_kinds.OUTPUT)

    def topological_order(self) -> list[Node]:
        """Nodes in an order where every producer precedes its consumers (stable: insertion order)."""
        indeg = {n: len({e.src for e in self._in[n]}) for n in self._nodes}
        order: list[Node] = []
        ready = [n for n in self._nodes if indeg[n] == 0]
        position = {n: i for i, n in enumerate(self._nodes)}
        import heapq

        heap = [(position[n], n) for n in ready]
        heapq.heapify(heap)
        while heap:
            _, n = heapq.heappop(heap)
            order.append(self._nodes[n])
            for dst in {e.dst for e in self._out[n]}:
                indeg[dst] -= 1
                if indeg[dst] == 0:
                    heapq.heappush(heap, (position[dst], dst))
        if len(order) != len(self._nodes):
            raise GraphError(f"Graph '{self.name}' has a cycle")
        return order

    def find(self, names: Iterable[str]) -> list[Node]:
        return [self.node(n) for n in names]

    # -- printing -------------------------------------------------------------------------
    def to_dot(self, highlight: dict[str, str] | None = None) -> str:
        """Graphviz text; ``highlight`` maps node names to a fill colour (e.g. quantized ops)."""
        highlight = highlight or {}
        ids = {name: f"n{i}" for i, name in enumerate(self._nodes)}
        lines = [f'digraph "{self.name}" {{', "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
        for name, node in self._nodes.items():
            label = f"{node.kind}\\n{name}".replace('"', "'")
            style = f', style=filled, fillcolor="{highlight[name]}"' if name in highlight else ""
            lines.append(f'  {ids[name]} [label="{label}"{style}];')
        for e in self.edges:
            shape = "x".join("?" if d is None else str(d) for d in (e.tensor.shape or ()))
            lines.append(f'  {ids[e.src]} -> {ids[e.dst]} [label="{shape} {e.tensor.dtype}", fontsize=8];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One line per node: kind, name, inputs; for printing and debugging."""
        rows = []
        for node in self._nodes.values():
            ins = ", ".join(f"{e.src}:{e.src_port}" for e in self._in[node.name])
            rows.append(f"{node.kind:<24} {node.name}  <- [{ins}]")
        return "\n".join(rows)
