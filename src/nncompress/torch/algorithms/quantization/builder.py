"""The ``quantization`` section: quantizer placement, precision, range initialization, insertion.

What the builder does with the section (NNCF 2.x semantics unless noted):

- ``target_device`` (top level) selects the hardware rules; ``preset``, ``quantize_inputs``,
  ``quantize_outputs``, the ``weights`` / ``activations`` groups (``mode``, ``bits``,
  ``per_channel``, ``signed``) and ``scope_overrides`` go to the core's ``place_quantizers``.
  A group key left unset leaves the choice to the device (e.g. weights are per-channel on CPU
  unless ``per_channel`` is set). Bits the device does not support are an error naming the op
  (use ``"target_device": "TRIAL"`` for arbitrary bit widths, as the NNCF mixed-precision configs do).
- ``ignored_scopes`` / ``target_scopes`` (section level, and per group inside ``weights`` /
  ``activations``): names or ``{re}`` patterns, NNCF spellings accepted (``NNCFConv2d[conv1]``,
  ``/nncf_model_input_0``; see :mod:`.scopes`). ``target_scopes`` keeps only the ops it
  matches; ``validate_scopes`` (default on) makes a scope that matches nothing an error.
- ``initializer.precision`` of type ``manual`` (the default when ``bitwidth_per_scope`` is given):
  ``[bits, "<quantizer id>"]`` pairs set single quantizers' bit widths. ``hawq`` and ``autoq``
  are not available (an error says so).
- ``overflow_fix`` (``enable`` / ``first_layer_only``): 8-bit weight quantizers of all layers /
  of the first convolutions use 7 of their 8 bits, on the devices whose INT8 kernels can
  overflow (``ANY`` and ``CPU``), as NNCF does.
- ``initializer.range``: one setting or a per-scope list (``target_scopes`` / ``ignored_scopes``
  / ``target_quantizer_group``; a quantizer must match exactly one entry, as in NNCF), plus
  ``scope_overrides.<group>.<scope>.initializer.range``. See
  :func:`nncompress.torch.initialization.compute_ranges`. Weights are always initialized from
  their own values (no data needed); with ``num_init_samples`` 0 activation quantizers keep their
  initial range ([-1, 1] symmetric, [0, 1] asymmetric).
- ``compression_lr_multiplier``: quantizer parameter gradients are multiplied by it (so with
  SGD their learning rate is), as NNCF does, unless the optimizer is built from
  :func:`nncompress.torch.optim.get_parameter_groups` (then the groups' ``lr`` carry it).
- ``export_to_onnx_standard_ops`` is accepted and needs nothing: ``.onnx`` exports always use
  the standard QuantizeLinear/DequantizeLinear; the FakeQuantize form is the ``.xml`` IR export.
- ``params`` (staged quantization): see ``StagedQuantizationScheduler``.

With a compression state, the saved quantizers (targets, specs, shapes) are rebuilt as they
were and nothing is initialized: the model's ``load_state_dict`` restores their values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from nncompress.config.effective import get_param
from nncompress.errors import CompressionStateError, ConfigError, QuantizationError, ScopeError, did_you_mean
from nncompress.graph import Graph
from nncompress.hardware.rules import HardwareRules, load_rules
from nncompress.parameters import TargetDevice
from nncompress.quantization.overflow_fix import apply_overflow_fix
from nncompress.quantization.placement import merge_group_placements, place_quantizers
from nncompress.quantization.quantizer_params import compute_params, unify_ranges
from nncompress.quantization.spec import Placement, QuantizationPoint, QuantizerSpec, TargetPoint, TargetType
from nncompress.scopes import IgnoredScope
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmBuilder
from nncompress.torch.algorithms.quantization.scopes import ScopeResolver, quantizer_id
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.initialization import (
    QuantizationRangeInitArgs,
    RangeInitConfig,
    compute_ranges,
    model_device,
)
from nncompress.torch.optim import compression_lr_multiplier, mark_compression_module
from nncompress.torch.quantizers import BaseQuantizer, create_quantizer

__all__ = ["QuantizationBuilder", "QuantizerRecord", "model_quantizers", "scale_shape_for", "tensor_shape"]

STATE_VERSION = 1
GROUPS = ("weights", "activations")
_PERCENTILE_TYPES = frozenset({"percentile", "mean_percentile"})
_SPEC_FIELDS = ("num_bits", "mode", "per_channel", "channel_axis", "signed", "narrow_range", "half_range")


@dataclass(frozen=True)
class QuantizerRecord:
    """One quantizer module: the tensors it quantizes (several for a unified scale), its spec,
    the shape of its parameters, and the ops reading its output."""

    targets: tuple[TargetPoint, ...]
    spec: QuantizerSpec
    is_weight: bool
    scale_shape: tuple[int, ...]
    consumers: tuple[tuple[str, int], ...] = ()
    reason: str = field(default="", compare=False)

    @property
    def qid(self) -> str:
        return ";".join(quantizer_id(t) for t in self.targets)

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.qid,
            "targets": [{"type": t.type.value, "node": t.node, "port": t.port} for t in self.targets],
            "is_weight": self.is_weight,
            "spec": {name: getattr(self.spec, name) for name in _SPEC_FIELDS},
            "scale_shape": list(self.scale_shape),
            "consumers": [[node, port] for node, port in self.consumers],
        }

    @classmethod
    def from_state(cls, entry: Any, index: int) -> QuantizerRecord:
        where = f"quantizer #{index}" + (f" ({entry.get('id')})" if isinstance(entry, dict) else "")
        try:
            targets = tuple(
                TargetPoint(TargetType(t["type"]), str(t["node"]), int(t["port"])) for t in entry["targets"]
            )
            spec_state = dict(entry["spec"])
            unknown = sorted(set(spec_state) - set(_SPEC_FIELDS))
            if unknown:
                raise ValueError(f"unknown spec fields {unknown}")
            spec = QuantizerSpec(**spec_state)
            record = cls(
                targets=targets,
                spec=spec,
                is_weight=bool(entry["is_weight"]),
                scale_shape=tuple(int(d) for d in entry["scale_shape"]),
                consumers=tuple((str(n), int(p)) for n, p in entry.get("consumers", ())),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"corrupt quantization state: {where}: {type(exc).__name__}: {exc}"
            ) from None
        if not targets:
            raise CompressionStateError(f"corrupt quantization state: {where} has no targets")
        return record


def tensor_shape(graph: Graph, target: TargetPoint) -> tuple[int | None, ...] | None:
    """Shape of the tensor at ``target`` as traced (None when the graph does not know it)."""
    if target.node not in graph:
        return None
    node = graph.node(target.node)
    if target.type is TargetType.WEIGHT:
        info = node.weights.get(target.port)
        return None if info is None else tuple(info.shape)
    if target.type is TargetType.OUTPUT:
        edges = graph.out_edges(target.node, target.port)
    else:
        edges = [e for e in graph.in_edges(target.node) if e.dst_port == target.port]
    for e in edges:
        if e.tensor.shape is not None:
            return tuple(e.tensor.shape)
    return None


def scale_shape_for(spec: QuantizerSpec, shape: Sequence[int | None] | None, where: str) -> tuple[int, ...]:
    """Parameter shape of a quantizer: ``(1,)`` per tensor; per channel, the channel count at the
    channel axis and 1 elsewhere."""
    if not spec.per_channel:
        return (1,)
    if shape is None or not shape:
        raise QuantizationError(f"per-channel quantizer {where}: the shape of its tensor is unknown")
    axis = spec.channel_axis % len(shape)  # type: ignore[operator]
    channels = shape[axis]
    if channels is None:
        raise QuantizationError(f"per-channel quantizer {where}: the channel dimension {axis} is dynamic")
    result = [1] * len(shape)
    result[axis] = int(channels)
    return tuple(result)


@register_algorithm_builder("quantization")
class QuantizationBuilder(PTCompressionAlgorithmBuilder):
    """Builds fake quantizers from a ``quantization`` section (see the module docstring)."""

    priority = 100  # after every other algorithm: quantizers see masked/pruned weights

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self._check_supported()
        self.target_device = TargetDevice(get_param(config, "target_device"))
        self.rules: HardwareRules = load_rules(self.target_device)
        self.records: list[QuantizerRecord] = []
        self.modules: list[BaseQuantizer] = []
        self.placement: Placement | None = None
        self.range_report: dict[TargetPoint, str] = {}

    # -- config checks ------------------------------------------------------------------------
    def _check_supported(self) -> None:
        problems = []
        for group in GROUPS:
            if self.param(f"{group}.logarithm_scale"):
                problems.append((f"{group}.logarithm_scale", "logarithmic scale storage is not supported"))
        if self.section.get("activations", {}).get("unified_scale_ops"):
            problems.append(
                (
                    "activations.unified_scale_ops",
                    "explicit unified-scale groups are not supported; concatenation inputs share a scale "
                    "automatically",
                )
            )
        ptype = self._precision_type()
        if ptype not in (None, "manual"):
            problems.append(
                (
                    "initializer.precision.type",
                    f"'{ptype}' precision search is not available; use 'manual' with bitwidth_per_scope",
                )
            )
        if problems:
            raise ConfigError([(f"compression.quantization.{path}", msg) for path, msg in problems])

    def _precision_type(self) -> str | None:
        precision = self.section.get("initializer", {}).get("precision")
        if not precision:
            return None
        ptype = self.param("initializer.precision.type")
        if ptype is None and "bitwidth_per_scope" in precision:
            return "manual"  # NNCF's precision initializer when no type is given
        return ptype

    # -- state ----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "target_device": self.target_device.value,
            "quantizers": [r.to_state() for r in self.records],
        }

    def _records_from_state(self, state: dict[str, Any], graph: Graph) -> list[QuantizerRecord]:
        if state.get("version") != STATE_VERSION or not isinstance(state.get("quantizers"), list):
            raise CompressionStateError(
                f"corrupt quantization state: expected version {STATE_VERSION} with a 'quantizers' list, got "
                f"keys {sorted(state)} (version {state.get('version')!r})"
            )
        records = [QuantizerRecord.from_state(entry, i) for i, entry in enumerate(state["quantizers"])]
        problems = []
        for record in records:
            issue = self._state_mismatch(record, graph)
            if issue:
                problems.append(f"  - {record.qid}: {issue}")
        if problems:
            raise CompressionStateError(
                f"the compression state does not match the model (graph '{graph.name}'): "
                f"{len(problems)} of {len(records)} quantizers cannot be placed:\n" + "\n".join(problems)
            )
        return records

    @staticmethod
    def _state_mismatch(record: QuantizerRecord, graph: Graph) -> str:
        for target in record.targets:
            if target.node not in graph:
                hint = did_you_mean(target.node, [n.name for n in graph.nodes])
                return f"node '{target.node}' is not in the model.{hint}"
            shape = tensor_shape(graph, target)
            if target.type is TargetType.WEIGHT and target.port not in graph.node(target.node).weights:
                return f"node '{target.node}' has no weight at port {target.port}"
            if shape is None and target.type is not TargetType.WEIGHT:
                return f"node '{target.node}' has no tensor at {target.type.value} port {target.port}"
            if record.spec.per_channel:
                try:
                    expected = scale_shape_for(record.spec, shape, record.qid)
                except QuantizationError as exc:
                    return str(exc)
                if expected != record.scale_shape:
                    return f"per-channel parameters of shape {record.scale_shape} do not fit the tensor of shape {shape}"
        return ""

    # -- placement ------------------------------------------------------------------------------
    def _scope_sets(self, resolver: ScopeResolver) -> dict[str, set[str]]:
        """Nodes whose inputs and weights stay in float, for weights and for activations."""
        validate = bool(self.param("validate_scopes"))
        ignored = resolver.match(self.section.get("ignored_scopes"), "ignored_scopes", validate=validate)
        target = None
        if self.section.get("target_scopes") is not None:
            target = resolver.match(self.section["target_scopes"], "target_scopes", validate=validate)
        result = {}
        for group in GROUPS:
            sub = self.section.get(group, {})
            group_validate = bool(self.param(f"{group}.validate_scopes"))
            group_ignored = ignored | resolver.match(
                sub.get("ignored_scopes"), f"{group}.ignored_scopes", validate=group_validate
            )
            group_target = target
            if sub.get("target_scopes") is not None:
                mine = resolver.match(sub["target_scopes"], f"{group}.target_scopes", validate=group_validate)
                group_target = mine if group_target is None else group_target & mine
            if group_target is not None:
                group_ignored |= resolver.op_names - group_target
            result[group] = group_ignored
        return result

    @staticmethod
    def _group_constraints(section: Mapping[str, Any]) -> dict[str, Any]:
        # only what the user set: unset keys leave the choice to the device rules
        return {k: section[k] for k in ("mode", "bits", "per_channel", "signed") if k in section}

    def _run_placement(self, graph: Graph, ignored: set[str], overrides: dict[str, Any]) -> Placement:
        return place_quantizers(
            graph,
            self.rules,
            preset=self.param("preset"),
            ignored_scope=IgnoredScope(names=sorted(ignored), validate=False),
            overrides=overrides,
            quantize_inputs=bool(self.param("quantize_inputs")),
            quantize_outputs=bool(self.param("quantize_outputs")),
            activations=self._group_constraints(self.section.get("activations", {})),
            weights=self._group_constraints(self.section.get("weights", {})),
        )

    def place(self, graph: Graph) -> Placement:
        """The placement for ``graph``: quantizers, their specs and why, with precision and the
        overflow fix applied."""
        resolver = ScopeResolver(graph)
        ignored = self._scope_sets(resolver)
        overrides = resolver.normalize_overrides(self.section.get("scope_overrides"))
        if ignored["weights"] == ignored["activations"]:
            placement = self._run_placement(graph, ignored["weights"], overrides)
        else:
            placement = merge_group_placements(
                graph, lambda group: self._run_placement(graph, ignored[group], overrides)
            )
        placement = self._apply_manual_precision(placement, graph, resolver)
        return self._apply_overflow_fix(placement, graph)

    def _apply_manual_precision(
        self, placement: Placement, graph: Graph, resolver: ScopeResolver
    ) -> Placement:
        if self._precision_type() != "manual":
            return placement
        table = self.param("initializer.precision.bitwidth_per_scope") or []
        by_id = {quantizer_id(p.target): p for p in placement.points}
        chosen: dict[TargetPoint, int] = {}
        unmatched = []
        for bits, scope in table:
            node, sep, kind = scope.rpartition("|")
            key = f"{resolver.normalize(node)}|{kind}" if sep else scope
            point = by_id.get(key)
            if point is None:
                unmatched.append(scope)
            else:
                chosen[point.target] = int(bits)
        if unmatched:
            hint = did_you_mean(unmatched[0], list(by_id)) if len(unmatched) == 1 else ""
            raise ScopeError(
                f"initializer.precision.bitwidth_per_scope: {len(unmatched)} entr{'y' if len(unmatched) == 1 else 'ies'} "
                f"name no quantizer of this model: {', '.join(repr(s) for s in unmatched[:5])}"
                f"{' ...' if len(unmatched) > 5 else ''}.{hint} Quantizers: {', '.join(list(by_id)[:8])}"
                f"{' ...' if len(by_id) > 8 else ''}",
                unmatched,
            )
        for target, bits in chosen.items():
            point = next(p for p in placement.points if p.target == target)
            self._check_bits_allowed(point, bits, graph)
        groups: dict[int, set[int]] = {}
        points = []
        for p in placement.points:
            if p.target in chosen:
                p = replace(
                    p,
                    spec=replace(p.spec, num_bits=chosen[p.target]),
                    reason=p.reason + "; bits set by initializer.precision",
                )
            if p.unified_group is not None:
                groups.setdefault(p.unified_group, set()).add(p.spec.num_bits)
            points.append(p)
        mixed = {g: b for g, b in groups.items() if len(b) > 1}
        if mixed:
            g, bits = next(iter(mixed.items()))
            members = [quantizer_id(p.target) for p in points if p.unified_group == g]
            raise QuantizationError(
                f"initializer.precision: the quantizers {', '.join(members)} share one scale but were given "
                f"different bit widths {sorted(bits)}; give them the same"
            )
        return Placement(points=points, skipped=placement.skipped)

    def _check_bits_allowed(self, point: QuantizationPoint, bits: int, graph: Graph) -> None:
        if self.rules.any_spec:
            return
        if point.is_weight:
            nodes = [graph.node(point.target.node)]
        else:
            nodes = [graph.node(n) for n, _ in point.consumers if n in graph]
        allowed: set[int] = set()
        for node in nodes:
            rule = self.rules.rule_for(node)
            if rule is None:
                continue
            options = rule.weights if point.is_weight else rule.activations
            allowed |= {o.bits for o in options}
        if allowed and bits not in allowed:
            raise QuantizationError(
                f"initializer.precision: {bits}-bit {quantizer_id(point.target)} is not allowed on "
                f'{self.target_device.value} (allowed: {sorted(allowed)}); use "target_device": "TRIAL" for '
                "arbitrary bit widths"
            )

    def _apply_overflow_fix(self, placement: Placement, graph: Graph) -> Placement:
        return apply_overflow_fix(placement, graph, self.param("overflow_fix"), self.target_device)

    # -- records and modules ------------------------------------------------------------------
    @staticmethod
    def records_from_placement(placement: Placement, graph: Graph) -> list[QuantizerRecord]:
        """One record per quantizer module: a unified group shares one module (its first point's spec)."""
        grouped: dict[Any, list[QuantizationPoint]] = {}
        for p in placement.points:
            key = ("unified", p.unified_group) if p.unified_group is not None else ("point", p.target)
            grouped.setdefault(key, []).append(p)
        records = []
        for points in grouped.values():
            first = points[0]
            qid = ";".join(quantizer_id(p.target) for p in points)
            shape = scale_shape_for(first.spec, tensor_shape(graph, first.target), qid)
            consumers = tuple(dict.fromkeys(c for p in points for c in p.consumers))
            records.append(
                QuantizerRecord(
                    targets=tuple(p.target for p in points),
                    spec=first.spec,
                    is_weight=first.is_weight,
                    scale_shape=shape,
                    consumers=consumers,
                    reason=first.reason,
                )
            )
        return records

    def _make_quantizer(self, record: QuantizerRecord, ranges: Mapping[TargetPoint, Any]) -> BaseQuantizer:
        found = [ranges[t] for t in record.targets if t in ranges]
        if not found:
            return create_quantizer(record.spec, scale_shape=record.scale_shape)
        low, high = unify_ranges(found) if len(found) > 1 else found[0]
        params = compute_params(record.spec, low, high, where=record.qid)
        return create_quantizer(record.spec, params, scale_shape=record.scale_shape)

    # -- range initialization config ----------------------------------------------------------
    def _range_config(self, section: Mapping[str, Any], path: str) -> RangeInitConfig:
        init_type = get_param(section, f"{path}.type", algorithm=self.algorithm_name)
        num = int(get_param(section, f"{path}.num_init_samples", algorithm=self.algorithm_name))
        params: tuple[tuple[str, float], ...] = ()
        if init_type in _PERCENTILE_TYPES:
            params = tuple(
                (name, float(get_param(section, f"{path}.params.{name}", algorithm=self.algorithm_name)))
                for name in ("min_percentile", "max_percentile")
            )
        return RangeInitConfig(init_type, num, params)

    def _entry_config(self, entry: Mapping[str, Any]) -> RangeInitConfig:
        # read one range object with the schema's defaults, whatever section it comes from
        return self._range_config(
            {"algorithm": self.algorithm_name, "initializer": {"range": dict(entry)}}, "initializer.range"
        )

    def range_config_resolver(self, resolver: ScopeResolver):
        """``point -> RangeInitConfig`` following ``initializer.range`` and the scope overrides."""
        validate = bool(self.param("validate_scopes"))
        overrides = resolver.normalize_overrides(self.section.get("scope_overrides"))
        override_ranges: dict[str, list[tuple[Any, RangeInitConfig]]] = {}
        for group in GROUPS:
            for key, entry in overrides.get(group, {}).items():
                rng = (entry or {}).get("initializer", {}).get("range")
                if isinstance(rng, list):
                    raise ConfigError(
                        [
                            (
                                f"compression.quantization.scope_overrides.{group}.{key}.initializer.range",
                                "a per-scope list is not supported inside scope_overrides; give one range object",
                            )
                        ]
                    )
                if isinstance(rng, Mapping):
                    override_ranges.setdefault(group, []).append(
                        (resolver.matcher(key), self._entry_config(rng))
                    )
        rng = self.section.get("initializer", {}).get("range")
        entries: list[tuple[set[str] | None, set[str], str | None, RangeInitConfig]] | None = None
        default = self._range_config(self.section, "initializer.range") if not isinstance(rng, list) else None
        if isinstance(rng, list):
            entries = []
            for i, entry in enumerate(rng):
                where = f"initializer.range[{i}]"
                target = (
                    resolver.match(entry["target_scopes"], f"{where}.target_scopes", validate=validate)
                    if entry.get("target_scopes") is not None
                    else None
                )
                ignored = resolver.match(
                    entry.get("ignored_scopes"), f"{where}.ignored_scopes", validate=validate
                )
                entries.append(
                    (target, ignored, entry.get("target_quantizer_group"), self._entry_config(entry))
                )

        def config_of(point: QuantizationPoint) -> RangeInitConfig:
            group = "weights" if point.is_weight else "activations"
            node = point.target.node
            chosen = None
            for matcher, cfg in override_ranges.get(group, []):
                if resolver.matches(matcher, node):
                    chosen = cfg
            if chosen is not None:
                return chosen
            if entries is None:
                return default  # type: ignore[return-value]
            hits = [
                cfg
                for target, ignored, qgroup, cfg in entries
                if (target is None or node in target) and node not in ignored and qgroup in (None, group)
            ]
            if len(hits) != 1:
                raise ConfigError(
                    [
                        (
                            "compression.quantization.initializer.range",
                            f"the {group[:-1]} quantizer {quantizer_id(point.target)} matches "
                            f"{'no' if not hits else len(hits)} range initialization entries; it must match exactly one",
                        )
                    ]
                )
            return hits[0]

        return config_of

    # -- building -------------------------------------------------------------------------------
    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        graph = context.graph
        if self._state is not None:
            self.records = self._records_from_state(self._state, graph)
            modules = [create_quantizer(r.spec, scale_shape=r.scale_shape) for r in self.records]
        else:
            self.placement = self.place(graph)
            self.records = self.records_from_placement(self.placement, graph)
            range_args = (
                self.config.get_extra_struct(QuantizationRangeInitArgs)
                if self.config.has_extra_struct(QuantizationRangeInitArgs)
                else None
            )
            result = compute_ranges(
                model,
                graph,
                self.placement.points,
                self.range_config_resolver(ScopeResolver(graph)),
                range_args,
            )
            self.range_report = result.how
            modules = [self._make_quantizer(r, result.ranges) for r in self.records]
        device = model_device(model)
        multiplier = compression_lr_multiplier(self.config, self.algorithm_name)
        for record, module in zip(self.records, modules):
            module.to(device)
            mark_compression_module(module, self.algorithm_name, multiplier)
            for target in record.targets:
                model.nncf.insert(target, module)
        self.modules = modules

    def build_controller(self, model: nn.Module, context: BuildContext):
        from nncompress.torch.algorithms.quantization.controller import QuantizationController

        return QuantizationController(model, self, context)


def model_quantizers(model: nn.Module) -> list[BaseQuantizer]:
    """Every fake quantizer module of a model, once each."""
    return list(dict.fromkeys(m for m in model.modules() if isinstance(m, BaseQuantizer)))
