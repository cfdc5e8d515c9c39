"""Where quantizers go: a ``Placement`` for a graph under a device's hardware rules.

``place_quantizers(graph, load_rules("CPU"))`` decides, for every tensor, whether and where it is
quantized, following the same rules as NNCF's quantizer propagation so that the same networks get
the same quantizers:

Weights
    every op whose rule quantizes weights (Convolution family, MatMul with a weight, Embedding,
    LSTM/GRU) gets one ``WEIGHT`` point per weight: symmetric, signed, narrow range as the device
    requires, per-channel along the weight's ``out_channel_axis`` (``weights_per_channel``,
    default from the device: on).
Activations
    every op whose rule quantizes activations asks for its float activation inputs to be
    quantized (both inputs of an Add of two activations, both inputs of an attention MatMul,
    only port 0 of Convolution/Interpolate/MVN, ports 0 and 1 of ScaledDotProductAttention...).
    Each request then moves *up* toward the producer:

    - through ops that only move or select values (MaxPool, Reshape, Transpose, Split, Slice,
      Gather...: rule ``propagation: through``) while every consumer of the tensor asked for the
      same spec, and never through an ignored op or a fused group;
    - through a Concat (``propagation: split``) to each of its inputs, which then share one
      scale (``unified_group``); a Concat input quantized for another consumer too merges
      groups;
    - at a tensor read by several ops: when all of them asked for the same spec, ONE quantizer
      at the producer's output (``TargetType.OUTPUT``) serves them all; when specs differ or
      some consumer reads the tensor in float (an ignored op, a float op, a model output), each
      asking op gets its own ``TargetType.INPUT`` point and the tensor stays float for the rest.

    A quantizer never lands inside a fused group (``nncompress.quantization.fusion``): a group's
    inputs are quantized as its first op's rule says, and a later op's quantizer sits after the
    group's last op (after the ReLU of Conv+BN+ReLU, after the ReLU of a residual Add+ReLU).
    Integer and bool tensors, constants and shape computations are never quantized; ops of kind
    ``Unknown`` are left in float. Every decision is in ``Placement.skipped`` or in a point's
    ``reason``.

Preset
    ``performance``: symmetric activations and weights; ``mixed``: asymmetric activations,
    symmetric weights. A device that allows only one mode for an op (symmetric
    ScaledDotProductAttention) gets it, with a note in the reason. Activation signedness is left
    to statistics (``signed=None``) unless the device or an override forces it.
Unified scales
    all inputs of a Concat share one scale; on NPU the inputs of elementwise ops too.
``model_type="transformer"`` (the rules NNCF applies to transformers)
    - the inputs of Add, Subtract, Multiply (except on CPU_SPR), Divide, Power, Sqrt, Maximum,
      Squeeze, AvgPool, ReduceMean/Sum/L2, MVN (LayerNorm), GroupNormalization, BatchNorm and
      the comparisons stay in float (the device data lists them: ``model_types.transformer``);
      so residual adds and LayerNorm get no quantizers, and Softmax/LayerNorm outputs are
      quantized only where they feed a quantized op (a MatMul);
    - activation quantizers feeding a MatMul of two activations (attention scores) are
      symmetric even with the mixed preset;
    - on ANY/CPU/GPU/NPU the attention output MatMul (Softmax x V, NNCF's
      ``multihead_attention_output`` pattern) and the RoPE block stay in float, so the Q*K^T
      MatMul is the one attention MatMul with quantized inputs; Embedding weights stay quantized.
Always (as NNCF)
    the convolutions of a squeeze-and-excitation block, ``Equal -> LogicalNot`` and GRU with
    ``linear_before_reset`` are left in float.
Powers (``quantize_powers=False``, ours; ``nncompress.quantize``'s default)
    a Power gets no input quantizers, and an elementwise op (Add, Multiply...) none on an input
    that a Power produces: raising values to a power spreads them over the power of their
    range, so an 8-bit grid on its input or output rounds the small ones to zero, and neither op
    has an INT8 kernel to gain. NNCF's CPU rules quantize a Power's inputs (``quantize_powers=
    True``, the default of ``place_quantizers`` and of training-time quantization); on
    silero-vad's |STFT|^2 (``re^2 + im^2 -> Sqrt``) that took the streamed speech probability's
    mean error to 0.171 (NNCF 3.4: 0.118; 0.043 with ours, ``tests/onnx/test_onnx_real_models.py``).
Recurrent ops without constant weights (ours)
    an LSTM/GRU whose weights are computed in the graph (silero-vad slices and concatenates
    them) cannot run in INT8, so its activation inputs get no quantizers either.
The model's tail (``quantize_tail=False``, ours; ``nncompress.quantize``'s default)
    ops after the last weighted op (Convolution, MatMul, Embedding, LSTM/GRU), from which only
    model outputs are reachable, get no input quantizers: an INT8 Add, ReduceMean or pool there
    saves nothing measurable, and its quantizer adds error right at the output, where the
    calibration range is often least representative (silero-vad's speech probability: a mean of
    per-item maxima that clips the rare speech frames; a detector's box decoding). NNCF quantizes
    them (``quantize_tail=True``, the default of ``place_quantizers`` and of training-time
    quantization, whose checkpoints follow NNCF's placement). A graph with no weighted op keeps
    its quantizers.

Example::

    placement = place_quantizers(graph, load_rules("CPU"), ignored_scope=IgnoredScope(types=["Softmax"]))
    print(placement.report())
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nncompress.errors import QuantizationError, ScopeError
from nncompress.graph import op_kinds
from nncompress.graph.graph import FLOAT_DTYPES, Edge, Graph, Node
from nncompress.hardware.rules import (
    PROPAGATION_SPLIT,
    PROPAGATION_STOP,
    PROPAGATION_THROUGH,
    HardwareRules,
    OpRule,
    SpecRequest,
)
from nncompress.parameters import ModelType, QuantizationPreset
from nncompress.quantization.fusion import (
    FusedGroup,
    FusionResult,
    NonActivation,
    find_fused_groups,
    find_ignored_by_patterns,
    find_non_activations,
)
from nncompress.quantization.spec import (
    Placement,
    QuantizationPoint,
    QuantizerSpec,
    TargetPoint,
    TargetType,
)
from nncompress.scopes import IgnoredScope

__all__ = ["QuantizerOverride", "merge_group_placements", "place_quantizers"]

# ours, not NNCF's (its CPU rules quantize a Power's inputs): silero-vad streamed with its own
# state on 4 s of held-out audio, mean |dp| 0.171 -> 0.043 (NNCF 3.4: 0.118), decisions 85 -> 95 %
_POWER_INPUTS = (
    "Power: its inputs stay in float (no INT8 kernel for it, and raising quantized values to a "
    "power multiplies their relative error)"
)
_POWER_INTO_ELEMENTWISE = (
    "output of {} into an elementwise op: left in float (a power spreads values over the power of "
    "their range, so an 8-bit grid zeroes the small ones, and the elementwise op gains no INT8 "
    "kernel from it)"
)


@dataclass(frozen=True)
class QuantizerOverride:
    """Settings that replace the defaults for weights or activations; None keeps the default.

    Built from an NNCF 2.x config section (``{"bits": 4, "mode": "asymmetric",
    "per_channel": true, "signed": true}``) with ``coerce``, which also takes any object with
    ``num_bits``/``mode``/``per_channel``/``signedness_to_force``/``narrow_range`` attributes
    (``nncompress.quantization.advanced_parameters.QuantizationParameters``).
    """

    num_bits: int | None = None
    mode: str | None = None
    per_channel: bool | None = None
    signed: bool | None = None
    narrow_range: bool | None = None

    def __post_init__(self) -> None:
        if self.mode is not None:
            mode = str(getattr(self.mode, "value", self.mode)).lower()
            if mode not in ("symmetric", "asymmetric"):
                raise ValueError(
                    f"QuantizerOverride.mode must be 'symmetric' or 'asymmetric', got {self.mode!r}"
                )
            object.__setattr__(self, "mode", mode)

    @classmethod
    def coerce(cls, value: Any) -> QuantizerOverride | None:
        if value is None or isinstance(value, QuantizerOverride):
            return value
        if isinstance(value, Mapping):
            get = value.get
            bits = get("bits", get("num_bits"))
            signed = get("signed", get("signedness_to_force"))
        else:
            get = lambda k, d=None: getattr(value, k, d)  # noqa: E731
            bits = get("num_bits", get("bits"))
            signed = get("signedness_to_force", get("signed"))
        return cls(
            num_bits=None if bits is None else int(bits),
            mode=get("mode"),
            per_channel=get("per_channel"),
            signed=signed,
            narrow_range=get("narrow_range"),
        )

    def apply(self, request: SpecRequest) -> SpecRequest:
        changes = {
            "num_bits": self.num_bits,
            "mode": self.mode,
            "per_channel": self.per_channel,
            "signed": self.signed,
            "narrow_range": self.narrow_range,
        }
        return replace(request, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class _ScopeOverride:
    key: str
    regex: re.Pattern[str] | None
    override: QuantizerOverride

    def matches(self, name: str) -> bool:
        if self.regex is None:
            return name == self.key
        return bool(self.regex.fullmatch(name) or self.regex.search(name))


def _parse_scope_overrides(
    overrides: Mapping[str, Any] | None, graph: Graph
) -> dict[str, list[_ScopeOverride]]:
    """NNCF 2.x ``scope_overrides``: ``{"weights"|"activations": {scope: section}}``; scope is a node
    name or ``{re}pattern``. A scope that matches no node is an error."""
    out: dict[str, list[_ScopeOverride]] = {"weights": [], "activations": []}
    if not overrides:
        return out
    names = [n.name for n in graph.nodes]
    for group, entries in overrides.items():
        if group not in out:
            raise ScopeError(
                f"scope_overrides: unknown group '{group}' (expected 'weights' or 'activations')"
            )
        for key, section in dict(entries or {}).items():
            regex = None
            if key.startswith("{re}"):
                try:
                    regex = re.compile(key[4:])
                except re.error as exc:
                    raise ScopeError(f"scope_overrides.{group}: bad pattern '{key}': {exc}") from None
            entry = _ScopeOverride(key, regex, QuantizerOverride.coerce(section) or QuantizerOverride())
            if not any(entry.matches(n) for n in names):
                raise ScopeError(f"scope_overrides.{group}: '{key}' matched no node of the model", [key])
            out[group].append(entry)
    return out


@dataclass
class _Demand:
    """A request to quantize one tensor, moving up the graph until it is placed."""

    spec: QuantizerSpec
    consumers: list[tuple[str, int]]
    origins: list[str]
    key: int
    moves: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _describe(node: Node) -> str:
    return f"{node.kind} '{node.name}'"


class _Placer:
    def __init__(self, graph: Graph, rules: HardwareRules, **opts: Any):
        self.graph = graph
        self.rules = rules
        self.preset = QuantizationPreset(opts["preset"])
        mt = opts["model_type"]
        self.model_type: str | None = None if mt is None else ModelType(mt).value
        self.ignored_scope: IgnoredScope | None = opts["ignored_scope"]
        self.scope_overrides = _parse_scope_overrides(opts["overrides"], graph)
        self.quantize_inputs: bool = opts["quantize_inputs"]
        self.quantize_outputs: bool = opts["quantize_outputs"]
        self.quantize_tail: bool = opts["quantize_tail"]
        self.quantize_powers: bool = opts["quantize_powers"]
        wpc = opts["weights_per_channel"]
        self.weights_per_channel: bool = rules.weights_per_channel if wpc is None else bool(wpc)
        self.activations_per_channel: bool = opts["activations_per_channel"]
        self.weight_bits: int = opts["weight_bits"]
        self.activation_bits: int = opts["activation_bits"]
        self.act_override = QuantizerOverride.coerce(opts["activations"])
        self.w_override = QuantizerOverride.coerce(opts["weights"])

        self.topo = graph.topological_order()
        self.pos = {n.name: i for i, n in enumerate(self.topo)}
        self.skipped: dict[str, str] = {}
        self.points: list[tuple[TargetPoint, _Demand | None, QuantizationPoint | None, str]] = []
        self.demands: dict[tuple[str, int], _Demand] = {}
        self._parent: dict[int, int] = {}
        self._unified_reason: dict[int, str] = {}

    # -- union-find over demand keys (unified scales) -------------------------------------
    def _new_key(self) -> int:
        key = len(self._parent)
        self._parent[key] = key
        return key

    def _root(self, key: int) -> int:
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def _unify(self, a: int, b: int) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._parent[rb] = ra

    # -- helpers ---------------------------------------------------------------------------
    def _node(self, name: str) -> Node:
        return self.graph.node(name)

    def _preset_mode(self) -> str:
        return "asymmetric" if self.preset == QuantizationPreset.MIXED else "symmetric"

    def _scoped(self, group: str, name: str, request: SpecRequest) -> SpecRequest:
        for entry in self.scope_overrides[group]:
            if entry.matches(name):
                request = entry.override.apply(request)
        return request

    def _is_model_input(self, name: str) -> bool:
        node = self._node(name)
        if node.kind == op_kinds.INPUT:
            return True
        group = self.fusion.group_of.get(name)
        return group is not None and group.last == name and self._node(group.primary).kind == op_kinds.INPUT

    def _skip(self, key: str, why: str) -> None:
        self.skipped.setdefault(key, why)

    # -- main ------------------------------------------------------------------------------
    def run(self) -> Placement:
        self.na: NonActivation = find_non_activations(self.graph)
        self.ignored = self._find_ignored()
        self.fusion: FusionResult = find_fused_groups(
            self.graph, self.rules, self.model_type, non_activation=self.na
        )
        self._place_weights()
        self._request_activations()
        if self.quantize_outputs:
            self._request_outputs()
        self._resolve()
        return self._finish()

    def _find_ignored(self) -> dict[str, str]:
        ignored: dict[str, str] = {}
        if self.ignored_scope is not None and not self.ignored_scope.is_empty():
            for name in sorted(self.ignored_scope.matches(self.graph.nodes), key=self.pos.__getitem__):
                ignored[name] = "ignored_scope: no quantizers on its inputs or weights"
                self._skip(name, ignored[name])
        by_pattern = find_ignored_by_patterns(self.graph, self.rules, self.model_type, non_activation=self.na)
        for name, pattern in by_pattern.items():
            ignored.setdefault(name, f"part of a '{pattern}' block, left in float (as NNCF)")
        float_kinds = self.rules.float_kinds(self.model_type)
        for node in self.topo:
            if node.kind in float_kinds:
                ignored.setdefault(
                    node.name,
                    f"model_type={self.model_type}: {node.kind} inputs stay in float on {self.rules.device}",
                )
            if node.kind == op_kinds.GRU and node.attrs.get("linear_before_reset"):
                ignored.setdefault(node.name, "GRUSequence with linear_before_reset stays in float (as NNCF)")
        if not self.quantize_tail:
            for name in self._tail():
                ignored.setdefault(
                    name,
                    "after the last weighted op, on the way to the outputs: left in float (quantize_tail)",
                )
        return ignored

    def _tail(self) -> list[str]:
        """Ops from which no weighted op is reachable (nothing, when the graph has no weighted op)."""
        feeds_compute: dict[str, bool] = {}
        for node in reversed(self.topo):
            feeds_compute[node.name] = any(
                self._node(e.dst).kind in op_kinds.WEIGHTED_KINDS or feeds_compute[e.dst]
                for e in self.graph.out_edges(node.name)
            )
        if not any(n.kind in op_kinds.WEIGHTED_KINDS for n in self.topo):
            return []
        return [
            n.name
            for n in self.topo
            if not feeds_compute[n.name]
            and n.kind not in op_kinds.WEIGHTED_KINDS
            and n.kind != op_kinds.OUTPUT
        ]

    # -- weights ---------------------------------------------------------------------------
    def _place_weights(self) -> None:
        seen: dict[str, str] = {}
        for node in self.topo:
            if not node.weights:
                continue
            rule = self.rules.rule_for(node)
            if rule is None or not rule.quantizes_weights:
                if node.kind in op_kinds.WEIGHTED_KINDS:
                    note = (
                        rule.note
                        if rule is not None and rule.note
                        else "no weight quantization for this op kind"
                    )
                    self._skip(node.name, f"{node.kind} weights stay in float on {self.rules.device}: {note}")
                continue
            if node.name in self.ignored:
                self._skip(node.name, self.ignored[node.name])
                continue
            for port, w in sorted(node.weights.items()):
                key = str(TargetPoint(TargetType.WEIGHT, node.name, port))
                if w.dtype not in FLOAT_DTYPES:
                    self._skip(key, f"{w.dtype} weight '{w.name}', never quantized")
                    continue
                axis = w.out_channel_axis
                axis_ok = len(w.shape) >= 2 and 0 <= axis < len(w.shape)
                request = SpecRequest(
                    num_bits=self.weight_bits,
                    mode="symmetric",
                    per_channel=self.weights_per_channel and axis_ok,
                    channel_axis=axis if axis_ok else None,
                )
                if self.w_override is not None:
                    request = self.w_override.apply(request)
                request = self._scoped("weights", node.name, request)
                if request.per_channel and request.channel_axis is None:
                    request = replace(request, per_channel=False)
                spec, notes = self.rules.make_spec(rule, request, weights=True)
                parts = [f"weight '{w.name}' of {_describe(node)}"]
                if spec.per_channel:
                    parts.append(f"per output channel (axis {spec.channel_axis})")
                parts += notes
                if w.name in seen:
                    parts.append(f"weight shared with '{seen[w.name]}'")
                seen.setdefault(w.name, node.name)
                point = QuantizationPoint(
                    target=TargetPoint(TargetType.WEIGHT, node.name, port),
                    spec=spec,
                    is_weight=True,
                    consumers=((node.name, port),),
                    reason="; ".join(parts),
                )
                self.points.append((point.target, None, point, ""))

    # -- activation requests ---------------------------------------------------------------
    def _activation_spec(
        self, node: Node, rule: OpRule | None, edge: Edge
    ) -> tuple[QuantizerSpec, list[str]]:
        rank = edge.tensor.rank
        per_channel = self.activations_per_channel and (rank is None or rank >= 2)
        request = SpecRequest(
            num_bits=self.activation_bits,
            mode=self._preset_mode(),
            per_channel=per_channel,
            channel_axis=1 if per_channel else None,
        )
        if self.act_override is not None:
            request = self.act_override.apply(request)
            if request.per_channel and request.channel_axis is None and (rank is None or rank >= 2):
                request = replace(request, channel_axis=1)
        request = self._scoped("activations", node.name, request)
        if request.per_channel and request.channel_axis is None:
            request = replace(request, per_channel=False)
        notes = []
        if (
            node.kind == op_kinds.MATMUL
            and request.mode != "symmetric"
            and self.rules.symmetric_activation_matmul(self.model_type)
            and not node.weights
            and not any(e.src in self.na.constant for e in self.graph.in_edges(node.name))
        ):
            request = replace(request, mode="symmetric")
            notes.append(f"symmetric: MatMul of two activations (model_type={self.model_type})")
        spec, more = self.rules.make_spec(rule, request, weights=False)
        return spec, notes + more

    def _new_demand(self, node: Node, rule: OpRule | None, edge: Edge, origin: str) -> _Demand:
        spec, notes = self._activation_spec(node, rule, edge)
        demand = _Demand(spec, [(edge.dst, edge.dst_port)], [origin], self._new_key(), notes=notes)
        self.demands[(edge.dst, edge.dst_port)] = demand
        return demand

    def _request_activations(self) -> None:
        device = self.rules.device.value
        for node in self.topo:
            name = node.name
            if node.kind == op_kinds.UNKNOWN:
                self._skip(name, "unsupported op, left in float")
                continue
            if name in self.na.all:
                continue
            rule = self.rules.rule_for(node)
            group = self.fusion.group_of.get(name)
            if group is not None and group.primary != name:
                if rule is not None and rule.quantizes_activations:
                    self._skip(
                        name, f"inside fused group {self._group_text(group)}: no quantizer on its inputs"
                    )
                continue
            if rule is None or not rule.quantizes_activations:
                if rule is not None and rule.note:
                    self._skip(name, f"{node.kind} (mode={node.attrs.get('mode')}): {rule.note} ({device})")
                continue
            if group is not None and not group.quantizable:
                self._skip(
                    name, f"first op of activation {self._group_text(group)}: quantized after its last op"
                )
                continue
            if name in self.ignored:
                self._skip(name, self.ignored[name])
                continue
            if node.kind == op_kinds.POWER and not self.quantize_powers:
                self._skip(name, _POWER_INPUTS)
                continue
            if node.kind in (op_kinds.LSTM, op_kinds.GRU) and not node.weights:
                self._skip(
                    name,
                    f"{_describe(node)}: its weights are computed in the graph, not constants, so it "
                    "has no INT8 kernel; its inputs stay float",
                )
                continue
            members = group.nodes if group is not None else (name,)
            origin_suffix = ""
            if group is not None:
                others = ", ".join(_describe(self._node(n)) for n in group.nodes if n != name)
                origin_suffix = f" (fused with {others})"
            created: list[_Demand] = []
            for member in members:
                mnode = self._node(member)
                for edge in self.graph.in_edges(member):
                    if edge.src in members or edge.dst_port in mnode.weights:
                        continue
                    if member == name and not rule.quantizes_input(edge.dst_port):
                        continue
                    key = str(TargetPoint(TargetType.INPUT, member, edge.dst_port))
                    why = self.na.why(edge.src)
                    if why is not None:
                        if member == name:
                            self._skip(key, f"{why}, into {_describe(mnode)}")
                        continue
                    if not edge.tensor.is_float:
                        self._skip(
                            key, f"{edge.tensor.dtype} tensor into {_describe(mnode)}: never quantized"
                        )
                        continue
                    if (
                        not self.quantize_powers
                        and mnode.kind in op_kinds.ELEMENTWISE_KINDS
                        and self._node(edge.src).kind == op_kinds.POWER
                    ):
                        self._skip(key, _POWER_INTO_ELEMENTWISE.format(_describe(self._node(edge.src))))
                        continue
                    origin = f"input {edge.dst_port} of {_describe(mnode)}{origin_suffix}"
                    created.append(self._new_demand(node, rule, edge, origin))
            if rule.unified_scales and len(created) > 1:
                for d in created[1:]:
                    self._unify(created[0].key, d.key)
                self._unified_reason[created[0].key] = (
                    f"unified scale: the inputs of {_describe(node)} share one scale on {device}"
                )

    def _request_outputs(self) -> None:
        for node in self.graph.output_nodes():
            for edge in self.graph.in_edges(node.name):
                key = str(TargetPoint(TargetType.INPUT, node.name, edge.dst_port))
                why = self.na.why(edge.src)
                if why is not None:
                    self._skip(key, why)
                elif not edge.tensor.is_float:
                    self._skip(key, f"{edge.tensor.dtype} model output: never quantized")
                else:
                    self._new_demand(node, None, edge, f"model output '{node.name}' (quantize_outputs=True)")

    def _group_text(self, group: FusedGroup) -> str:
        ops = " -> ".join(f"{self._node(n).kind}" for n in group.nodes)
        return f"'{group.pattern}' [{ops}] ending at '{group.last}'"

    # -- resolution ------------------------------------------------------------------------
    def _merge(self, demands: list[_Demand]) -> _Demand:
        if len(demands) == 1:
            return demands[0]
        first = demands[0]
        merged = _Demand(
            first.spec,
            _dedupe(c for d in demands for c in d.consumers),
            _dedupe(o for d in demands for o in d.origins),
            first.key,
            _dedupe(m for d in demands for m in d.moves),
            _dedupe(n for d in demands for n in d.notes),
        )
        for d in demands[1:]:
            self._unify(first.key, d.key)
        return merged

    def _resolve(self) -> None:
        for node in reversed(self.topo):
            name = node.name
            full: dict[int, _Demand] = {}
            relevant_ports: set[int] = set()
            for port in sorted({e.src_port for e in self.graph.out_edges(name)}):
                edges = [
                    e
                    for e in self.graph.out_edges(name, port)
                    if self._node(e.dst).kind not in op_kinds.SHAPE_KINDS
                ]
                if edges:
                    relevant_ports.add(port)
                pairs = [(e, self.demands.pop((e.dst, e.dst_port), None)) for e in edges]
                got = [(e, d) for e, d in pairs if d is not None]
                if not got:
                    continue
                blockers = [e for e, d in pairs if d is None]
                if not blockers and len({d.spec for _, d in got}) == 1:
                    full[port] = self._merge([d for _, d in got])
                    continue
                if blockers:
                    readers = _dedupe(_describe(self._node(e.dst)) for e in blockers)
                    shown = ", ".join(readers[:3]) + (
                        f" and {len(readers) - 3} more" if len(readers) > 3 else ""
                    )
                    why = f"kept at this input: {shown} also read(s) '{name}' unquantized"
                else:
                    why = "kept at this input: the consumers of this tensor need different specs"
                for e, d in got:
                    self._place(TargetType.INPUT, e.dst, e.dst_port, d, why, producer=name)
            if not full:
                continue
            if set(full) == relevant_ports and self._move_up(node, full):
                continue
            for port, d in full.items():
                if node.kind == op_kinds.UNKNOWN:
                    # an unknown op may not return the tensor it produces (in-place ops such as
                    # __setitem__): quantize where its consumers read it instead
                    why = f"kept at this input: '{name}' is an unsupported op whose output cannot be hooked"
                    for e in self.graph.out_edges(name, port):
                        self._place(TargetType.INPUT, e.dst, e.dst_port, d, why, producer=name)
                    continue
                self._place(TargetType.OUTPUT, name, port, d, "", producer=name)
        for (dst, port), d in list(self.demands.items()):  # nothing should be left; place defensively
            self._place(TargetType.INPUT, dst, port, d, "", producer=None)
        self.demands.clear()

    def _move_up(self, node: Node, full: dict[int, _Demand]) -> bool:
        if len({d.spec for d in full.values()}) != 1:
            return False
        rule = self.rules.rule_for(node)
        if rule is None or rule.propagation == PROPAGATION_STOP:
            return False
        if node.name in self.ignored or node.name in self.fusion.group_of:
            return False
        inputs = [
            e
            for e in self.graph.in_edges(node.name)
            if e.src not in self.na.all and e.dst_port not in node.weights and e.tensor.is_float
        ]
        if not inputs:
            return False
        merged = self._merge(list(full.values()))
        if rule.propagation == PROPAGATION_THROUGH:
            if len(inputs) != 1:
                return False
            merged.moves.append(_describe(node))
            self.demands[(node.name, inputs[0].dst_port)] = merged
            return True
        if rule.propagation == PROPAGATION_SPLIT:
            for e in self.graph.in_edges(node.name):
                why = self.na.why(e.src)
                if why is not None:
                    self._skip(
                        str(TargetPoint(TargetType.INPUT, node.name, e.dst_port)),
                        f"{why}, into {_describe(node)}",
                    )
            move = f"{_describe(node)} (to each of its inputs)"
            for e in inputs:
                copy = _Demand(
                    merged.spec,
                    list(merged.consumers),
                    list(merged.origins),
                    self._new_key(),
                    [*merged.moves, move],
                    list(merged.notes),
                )
                self._unify(merged.key, copy.key)
                self.demands[(node.name, e.dst_port)] = copy
            if len(inputs) > 1 and rule.unified_scales:
                self._unified_reason[merged.key] = (
                    f"unified scale: the inputs of {_describe(node)} share one scale"
                )
            return True
        return False

    def _place(
        self, type_: TargetType, node: str, port: int, demand: _Demand, why: str, *, producer: str | None
    ) -> None:
        target = TargetPoint(type_, node, port)
        if producer is not None and not self.quantize_inputs and self._is_model_input(producer):
            self._skip(str(target), f"model input '{producer}' left in float (quantize_inputs=False)")
            return
        self.points.append((target, demand, None, why))

    # -- result ----------------------------------------------------------------------------
    def _finish(self) -> Placement:
        counts = Counter(self._root(d.key) for _, d, _, _ in self.points if d is not None)
        unified_why: dict[int, list[str]] = {}
        for key, text in self._unified_reason.items():
            unified_why.setdefault(self._root(key), []).append(text)
        group_ids: dict[int, int] = {}
        order = {TargetType.INPUT: 0, TargetType.WEIGHT: 1, TargetType.OUTPUT: 2}
        entries = sorted(
            self.points, key=lambda p: (self.pos.get(p[0].node, -1), order[p[0].type], p[0].port)
        )
        points: list[QuantizationPoint] = []
        for target, demand, ready, why in entries:
            if ready is not None:
                points.append(ready)
                continue
            assert demand is not None
            root = self._root(demand.key)
            group = None
            parts = []
            if len(demand.origins) == 1:
                parts.append(demand.origins[0])
            else:
                parts.append(f"shared by {len(demand.origins)} consumers: " + "; ".join(demand.origins))
            if demand.moves:
                parts.append("moved up through " + ", ".join(demand.moves))
            if self._is_model_input(target.node) and target.type == TargetType.OUTPUT:
                parts.append(f"model input '{target.node}'")
            parts += demand.notes
            if why:
                parts.append(why)
            if counts[root] > 1:
                group = group_ids.setdefault(root, len(group_ids))
                parts += _dedupe(unified_why.get(root, ["unified scale with the other points of this group"]))
            points.append(
                QuantizationPoint(
                    target=target,
                    spec=demand.spec,
                    is_weight=False,
                    consumers=tuple(demand.consumers),
                    unified_group=group,
                    reason="; ".join(parts),
                )
            )
        if not points:
            raise QuantizationError(self._nothing_message())
        return Placement(points=points, skipped=dict(self.skipped))

    def _nothing_message(self) -> str:
        boundary = {op_kinds.INPUT, op_kinds.OUTPUT, op_kinds.CONSTANT}
        kinds = Counter(n.kind for n in self.graph.nodes if n.kind not in boundary)
        seen = ", ".join(f"{k} x{c}" if c > 1 else k for k, c in sorted(kinds.items())) or "none"
        msg = (
            f"nothing to quantize: no op of graph '{self.graph.name}' gets a quantizer under the "
            f"{self.rules.device.value} rules (op kinds seen: {seen})"
        )
        if self.skipped:
            first = list(self.skipped.items())[:5]
            msg += "; skipped: " + "; ".join(f"{k}: {v}" for k, v in first)
            if len(self.skipped) > 5:
                msg += f"; and {len(self.skipped) - 5} more"
        return msg


def place_quantizers(
    graph: Graph,
    rules: HardwareRules,
    *,
    preset: QuantizationPreset | str = QuantizationPreset.PERFORMANCE,
    model_type: ModelType | str | None = None,
    ignored_scope: IgnoredScope | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    quantize_inputs: bool = True,
    quantize_outputs: bool = False,
    quantize_tail: bool = True,
    quantize_powers: bool = True,
    weights_per_channel: bool | None = None,
    activations_per_channel: bool = False,
    weight_bits: int = 8,
    activation_bits: int = 8,
    activations: QuantizerOverride | Mapping[str, Any] | Any | None = None,
    weights: QuantizerOverride | Mapping[str, Any] | Any | None = None,
) -> Placement:
    """Decide where quantizers go in ``graph`` under ``rules`` (see the module docstring).

    ``overrides`` are NNCF 2.x ``scope_overrides``: ``{"weights": {"{re}.*fc.*": {"bits": 4}},
    "activations": {"Net/Conv2d[conv1]/conv2d_0": {"mode": "asymmetric"}}}``; an activation
    scope matches the op whose input is quantized. ``activations``/``weights`` are the NNCF
    config sections (or ``QuantizationParameters``) applied to every activation/weight
    quantizer; precedence: ``weight_bits``/``activation_bits``/``*_per_channel`` < section <
    scope override < what the device allows.

    Raises ``ScopeError`` for an ignored scope or override scope that matches no node and
    ``QuantizationError`` when nothing can be quantized.

    >>> placement = place_quantizers(graph, load_rules("CPU"))  # doctest: +SKIP
    >>> print(placement.report())  # doctest: +SKIP
    """
    placer = _Placer(
        graph,
        rules,
        preset=preset,
        model_type=model_type,
        ignored_scope=ignored_scope,
        overrides=overrides,
        quantize_inputs=quantize_inputs,
        quantize_outputs=quantize_outputs,
        quantize_tail=quantize_tail,
        quantize_powers=quantize_powers,
        weights_per_channel=weights_per_channel,
        activations_per_channel=activations_per_channel,
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        activations=activations,
        weights=weights,
    )
    return placer.run()


def merge_group_placements(graph: Graph, place: Callable[[str], Placement]) -> Placement:
    """One placement from a run per quantizer group, ``place("weights")`` and
    ``place("activations")``, each with that group's ignored scopes (NNCF 2.x sections scope
    weights and activations apart). Weight points depend only on their own op, so the weight
    points of the first run and the activation points of the second make the whole placement.
    A group with nothing to quantize contributes nothing; if neither has anything, its error."""
    runs: dict[str, Placement | None] = {}
    errors: list[QuantizationError] = []
    for group in ("weights", "activations"):
        try:
            runs[group] = place(group)
        except QuantizationError as exc:
            if not str(exc).startswith("nothing to quantize"):
                raise
            runs[group] = None  # nothing in this group's scopes; the other group may have some
            errors.append(exc)
    weights = runs["weights"].weight_points if runs["weights"] else []
    activations = runs["activations"].activation_points if runs["activations"] else []
    if not weights and not activations:
        raise errors[0] if errors else QuantizationError("nothing to quantize")
    order = {n.name: i for i, n in enumerate(graph.topological_order())}
    points = sorted([*weights, *activations], key=lambda p: (order.get(p.target.node, -1), not p.is_weight))
    skipped: dict[str, str] = {}
    for run in runs.values():
        if run is not None:
            skipped.update(run.skipped)
    return Placement(points=points, skipped=skipped)
