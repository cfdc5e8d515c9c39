"""The quantization controller: quantizer access, staged enabling, statistics, strip, export checks."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from nncompress.api.compression import BaseCompressionScheduler, CompressionStage, NNCFStatistics, Statistics
from nncompress.errors import ExportError
from nncompress.graph import op_kinds
from nncompress.quantization.quantizer_params import compute_params, unify_ranges
from nncompress.quantization.spec import Placement, QuantizationPoint
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmController
from nncompress.torch.algorithms.quantization.builder import QuantizationBuilder, QuantizerRecord
from nncompress.torch.algorithms.quantization.scopes import ScopeResolver
from nncompress.torch.initialization import (
    QuantizationRangeInitArgs,
    broadcast_module_state,
    compute_ranges,
)
from nncompress.torch.quantizers import BaseQuantizer

__all__ = ["QuantizationController", "QuantizationStatistics", "QuantizerInfo", "StagedQuantizationScheduler"]

logger = logging.getLogger("nncompress")


@dataclass(frozen=True)
class QuantizerInfo:
    """One row of the statistics table."""

    qid: str
    is_weight: bool
    bits: int
    mode: str
    signed: bool
    per_channel: bool
    low: float
    high: float
    enabled: bool
    half_range: bool = False


@dataclass
class QuantizationStatistics(Statistics):
    """Quantizers of the model (bits, mode, granularity, range) and how many ops they cover.

    ``ratio_of_quantized_ops`` is ``quantized_ops / quantizable_ops``: among the ops the device
    rules quantize (convolutions, matmuls, ...), those with at least one enabled quantizer on a
    weight or an input.
    """

    quantizers: list[QuantizerInfo] = field(default_factory=list)
    quantized_ops: int = 0
    quantizable_ops: int = 0

    @property
    def num_weight_quantizers(self) -> int:
        return sum(q.is_weight for q in self.quantizers)

    @property
    def num_activation_quantizers(self) -> int:
        return sum(not q.is_weight for q in self.quantizers)

    @property
    def num_enabled_quantizers(self) -> int:
        return sum(q.enabled for q in self.quantizers)

    @property
    def ratio_of_quantized_ops(self) -> float:
        return self.quantized_ops / self.quantizable_ops if self.quantizable_ops else 0.0

    @property
    def bits_per_group(self) -> dict[str, dict[int, int]]:
        """``{"weights": {8: n, 4: m}, "activations": {...}}`` counts of quantizers per bit width."""
        result: dict[str, Counter] = {"weights": Counter(), "activations": Counter()}
        for q in self.quantizers:
            result["weights" if q.is_weight else "activations"][q.bits] += 1
        return {k: dict(sorted(v.items())) for k, v in result.items()}

    def to_str(self) -> str:
        bits = self.bits_per_group
        lines = [
            f"Weight quantizers: {self.num_weight_quantizers} "
            f"({', '.join(f'{n} x {b}-bit' for b, n in bits['weights'].items()) or 'none'})",
            f"Activation quantizers: {self.num_activation_quantizers} "
            f"({', '.join(f'{n} x {b}-bit' for b, n in bits['activations'].items()) or 'none'})",
            f"Enabled quantizers: {self.num_enabled_quantizers} of {len(self.quantizers)}",
            f"Quantized ops: {self.quantized_ops} of {self.quantizable_ops} quantizable "
            f"({self.ratio_of_quantized_ops:.1%})",
        ]
        header = ("Quantizer", "Type", "Bits", "Mode", "Signed", "Granularity", "Range", "Enabled")
        rows = [
            (
                q.qid,
                "W" if q.is_weight else "A",
                f"{q.bits}" + (" (7 used)" if q.half_range else ""),
                q.mode,
                "yes" if q.signed else "no",
                "per-channel" if q.per_channel else "per-tensor",
                f"[{q.low:.4g}, {q.high:.4g}]",
                "yes" if q.enabled else "no",
            )
            for q in self.quantizers
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

        def fmt(row: Iterable[str]) -> str:
            return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"

        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        lines += [rule, fmt(header), rule, *(fmt(r) for r in rows), rule]
        return "\n".join(lines)


class StagedQuantizationScheduler(BaseCompressionScheduler):
    """NNCF's staged quantization: activations from ``activations_quant_start_epoch``, weights
    from ``weights_quant_start_epoch`` (zero-based epochs counted by ``epoch_step``). Before a
    group starts its quantizers are disabled; at its start epoch they are enabled and their
    ranges re-initialized (weights from their values; activations when range-init data is
    registered with the config). The learning-rate and weight-decay keys of ``params`` are for
    the training script, as in NNCF's sample code."""

    def __init__(self, controller: QuantizationController, activations_start: int, weights_start: int):
        super().__init__()
        self._ctrl = controller
        self.activations_quant_start_epoch = int(activations_start)
        self.weights_quant_start_epoch = int(weights_start)
        self._set_status()

    def _set_status(self) -> None:
        epoch = max(self.current_epoch, 0)
        self._ctrl._enable_group(True, epoch >= self.weights_quant_start_epoch)
        self._ctrl._enable_group(False, epoch >= self.activations_quant_start_epoch)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        starting = []
        if self.current_epoch == self.activations_quant_start_epoch:
            starting.append("activations")
        if self.current_epoch == self.weights_quant_start_epoch:
            starting.append("weights")
        self._set_status()
        if starting:
            logger.info(
                "Staged quantization: epoch %d enables %s quantizers",
                self.current_epoch,
                " and ".join(starting),
            )
            self._ctrl.init_range(groups=starting)

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._set_status()


class QuantizationController(PTCompressionAlgorithmController):
    """Controls the fake quantizers inserted by :class:`QuantizationBuilder`.

    ``all_quantizations`` / ``weight_quantizers`` / ``non_weight_quantizers`` map NNCF quantizer ids
    to modules. ``loss()`` is zero; the scheduler is NNCF's staged one when the section has
    ``params``, else a plain step/epoch counter.
    """

    def __init__(self, model: nn.Module, builder: QuantizationBuilder, context: BuildContext):
        super().__init__(model, builder.algorithm_name, builder.get_state(), context)
        self._builder = builder
        self._records: list[QuantizerRecord] = list(builder.records)
        self._modules: list[BaseQuantizer] = list(builder.modules)
        self._placement: Placement | None = builder.placement
        self._graph = context.graph
        self._range_report = dict(builder.range_report)
        if builder.section.get("params"):
            self._scheduler = StagedQuantizationScheduler(
                self,
                builder.param("params.activations_quant_start_epoch"),
                builder.param("params.weights_quant_start_epoch"),
            )

    # -- quantizers ------------------------------------------------------------------------
    @property
    def all_quantizations(self) -> dict[str, BaseQuantizer]:
        return {r.qid: m for r, m in zip(self._records, self._modules)}

    @property
    def weight_quantizers(self) -> dict[str, BaseQuantizer]:
        return {r.qid: m for r, m in zip(self._records, self._modules) if r.is_weight}

    @property
    def non_weight_quantizers(self) -> dict[str, BaseQuantizer]:
        return {r.qid: m for r, m in zip(self._records, self._modules) if not r.is_weight}

    @property
    def records(self) -> list[QuantizerRecord]:
        return list(self._records)

    def _enable_group(self, weights: bool, flag: bool) -> None:
        for record, module in zip(self._records, self._modules):
            if record.is_weight == weights:
                module.enable(flag)

    def enable_weight_quantization(self) -> None:
        self._enable_group(True, True)

    def disable_weight_quantization(self) -> None:
        self._enable_group(True, False)

    def enable_activation_quantization(self) -> None:
        self._enable_group(False, True)

    def disable_activation_quantization(self) -> None:
        self._enable_group(False, False)

    def placement_report(self) -> str:
        """Where quantizers went and why (and what stayed in float); records only after a resume."""
        if self._placement is not None:
            return self._placement.report()
        lines = [f"Quantizers restored from a compression state: {len(self._records)}"]
        lines += [f"  {'W' if r.is_weight else 'A'} {r.qid}  {r.spec.describe()}" for r in self._records]
        return "\n".join(lines)

    # -- initialization --------------------------------------------------------------------
    def init_range(self, groups: Iterable[str] = ("weights", "activations")) -> None:
        """Re-initialize quantizer ranges (of ``groups``) with the config's ``initializer.range``.

        Activation ranges need ``QuantizationRangeInitArgs`` registered with the config; without
        them only weight ranges are re-initialized.
        """
        groups = set(groups)
        config = self._builder.config
        args = (
            config.get_extra_struct(QuantizationRangeInitArgs)
            if config.has_extra_struct(QuantizationRangeInitArgs)
            else None
        )
        if args is None and "activations" in groups:
            logger.info(
                "Range re-initialization of activations skipped: no QuantizationRangeInitArgs registered"
            )
            groups.discard("activations")
        selected = [
            (r, m)
            for r, m in zip(self._records, self._modules)
            if ("weights" if r.is_weight else "activations") in groups
        ]
        if not selected:
            return
        points = [
            QuantizationPoint(target=t, spec=r.spec, is_weight=r.is_weight, consumers=r.consumers)
            for r, _ in selected
            for t in r.targets
        ]
        resolver = self._builder.range_config_resolver(ScopeResolver(self._graph))
        result = compute_ranges(self.model, self._graph, points, resolver, args)
        for record, module in selected:
            found = [result.ranges[t] for t in record.targets if t in result.ranges]
            if found:
                low, high = unify_ranges(found) if len(found) > 1 else found[0]
                module.set_params(compute_params(record.spec, low, high, where=record.qid))
        self._range_report.update(result.how)

    # -- algorithm API ------------------------------------------------------------------------
    def compression_stage(self) -> CompressionStage:
        enabled = [m.is_enabled for m in self._modules]
        if enabled and all(enabled):
            return CompressionStage.FULLY_COMPRESSED
        if any(enabled):
            return CompressionStage.PARTIALLY_COMPRESSED
        return CompressionStage.UNCOMPRESSED

    def _quantized_op_counts(self) -> tuple[int, int]:
        rules = self._builder.rules
        quantizable = {
            n.name
            for n in self._graph.nodes
            if n.kind not in (op_kinds.INPUT, op_kinds.OUTPUT)
            and (rule := rules.rule_for(n)) is not None
            and (rule.quantizes_weights or rule.quantizes_activations)
        }
        covered: set[str] = set()
        for record, module in zip(self._records, self._modules):
            if not module.is_enabled:
                continue
            if record.is_weight:
                covered.update(t.node for t in record.targets)
            else:
                covered.update(node for node, _ in record.consumers)
        return len(covered & quantizable), len(quantizable)

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        """Per-quantizer bits, mode, sign, granularity and float range, plus op coverage (all of it is
        cheap to collect, so ``quickly_collected_only`` changes nothing)."""
        rows = []
        for record, module in zip(self._records, self._modules):
            params = module.export_params()
            rows.append(
                QuantizerInfo(
                    qid=record.qid,
                    is_weight=record.is_weight,
                    bits=int(module.num_bits),
                    mode=module.mode,
                    signed=bool(module.signed),
                    per_channel=module.per_channel,
                    low=float(np.min(params.input_low)),
                    high=float(np.max(params.input_high)),
                    enabled=module.is_enabled,
                    half_range=bool(module.half_range),
                )
            )
        quantized, quantizable = self._quantized_op_counts()
        stats = NNCFStatistics()
        stats.register(self.algorithm_name, QuantizationStatistics(rows, quantized, quantizable))
        return stats

    def prepare_for_export(self) -> None:
        """Warn about disabled quantizers (they are exported as float); refuse non-finite ranges."""
        bad = []
        for record, module in zip(self._records, self._modules):
            if not module.is_enabled:
                logger.warning("Quantizer %s is disabled: its tensor is exported in float", record.qid)
                continue
            p = module.export_params()
            if not (np.all(np.isfinite(p.scale)) and np.all(np.asarray(p.scale) > 0)):
                bad.append(record.qid)
        if bad:
            raise ExportError(
                f"cannot export: {len(bad)} quantizer(s) have a non-finite or zero scale: {', '.join(bad[:5])}"
            )

    def strip_model(self, model: nn.Module, do_copy: bool = False) -> nn.Module:
        """``model`` for inference: disabled quantizers removed, quantizer parameters frozen.

        The model stays the wrapped instance of the user's class: in eval mode its quantizers run
        torch's ``fake_quantize_per_*_affine`` ops on the exported integer grid, which is what the
        ONNX / OpenVINO exports contain.
        """
        if do_copy:
            model = copy.deepcopy(model)
        manager = model.nncf.hook_manager
        for target, hook in list(manager.items()):
            if isinstance(hook, BaseQuantizer):
                if not hook.is_enabled:
                    manager.remove(target, hook)
                else:
                    for param in hook.parameters():
                        param.requires_grad_(False)
        return model

    def distributed(self) -> None:
        """Mark data-parallel training and copy every quantizer's parameters from rank 0, so all
        ranks start identical (range initialization already all-reduces its statistics)."""
        super().distributed()
        broadcast_module_state(self._modules)
