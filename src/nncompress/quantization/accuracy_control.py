"""``nncompress.quantize_with_accuracy_control``: quantize, then keep the worst ops in float.

Backend-neutral, built on ``nncompress.quantize``: the model is quantized, the metric of the
float and the quantized model is measured with the user's ``validation_fn``; while the metric
drop exceeds ``max_drop``, quantizable ops are reverted to float (by re-quantizing with those
ops added to the ignored scope), the ops with the largest metric gain first.

A *group* is every quantizer serving one quantizable op: its input activation quantizer(s) and
its weight quantizer. Its effect is the metric gain, measured on ``ranking_subset_size``
validation items, when that op alone is left in float.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from nncompress.backends import detect_backend
from nncompress.data import Dataset
from nncompress.errors import DatasetError, NNCompressWarning, QuantizationError
from nncompress.parameters import DropType, ModelType, QuantizationPreset, TargetDevice
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters
from nncompress.quantization.quantize import quantize
from nncompress.quantization.spec import Placement
from nncompress.scopes import IgnoredScope

logger = logging.getLogger(__name__)

# at most this many ops are ranked one by one; beyond it, ops are first ranked in chunks
MAX_RANKED_CANDIDATES = 64


@dataclass
class AdvancedAccuracyRestorerParameters:
    """NNCF's accuracy-restorer options.

    ``max_num_iterations``: most ops reverted to float. ``ranking_subset_size``: validation items
    used to rank ops (None: all of them, at most 300). ``tune_hyperparams`` is not supported;
    ``num_ranking_workers`` is accepted and ignored (ranking runs sequentially).
    ``intermediate_model_dir`` is accepted and ignored.
    """

    max_num_iterations: int = sys.maxsize
    tune_hyperparams: bool = False
    ranking_subset_size: int | None = None
    num_ranking_workers: int | None = None
    intermediate_model_dir: str | None = None


@dataclass
class AccuracyControlReport:
    """What ``quantize_with_accuracy_control`` did (see ``last_accuracy_control_report``)."""

    drop_type: DropType
    max_drop: float
    fp32_metric: float
    quantized_metric: float
    final_metric: float
    final_drop: float
    reverted_ops: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (op, metric gain), best first
    iterations: int = 0
    target_met: bool = True

    def summary(self) -> str:
        lines = [
            f"Accuracy control ({self.drop_type.value} drop, max_drop={self.max_drop}):",
            f"  FP32 metric {self.fp32_metric:.6g}, INT8 metric {self.quantized_metric:.6g}, "
            f"final metric {self.final_metric:.6g}, final drop {self.final_drop:.6g}"
            f" ({'target met' if self.target_met else 'TARGET NOT MET'})",
            f"  ops reverted to float ({len(self.reverted_ops)}): {', '.join(self.reverted_ops) or 'none'}",
        ]
        return "\n".join(lines)


_LAST_REPORT: AccuracyControlReport | None = None


def last_accuracy_control_report() -> AccuracyControlReport | None:
    """The report of the latest ``quantize_with_accuracy_control`` call in this process."""
    return _LAST_REPORT


def calculate_drop(fp32_metric: float, metric: float, drop_type: DropType) -> float:
    """Absolute: ``fp32 - metric``; relative: ``(fp32 - metric) / |fp32|`` (absolute when fp32 is 0)."""
    drop = fp32_metric - metric
    if DropType(drop_type) == DropType.RELATIVE and fp32_metric != 0:
        drop /= abs(fp32_metric)
    return drop


def _placement(model: Any, backend: str) -> Placement:
    if backend == "torch":
        placement = getattr(getattr(getattr(model, "nncf", None), "hook_manager", None), "placement", None)
        if placement is None:
            raise QuantizationError("accuracy control: the quantized torch model has no placement")
        return placement
    import importlib

    stored = importlib.import_module(f"nncompress.{backend}").placement_of(model)
    if stored is None:
        raise QuantizationError(f"accuracy control: the quantized {backend} model has no placement")
    return Placement.from_dict(stored)


def _candidate_ops(placement: Placement) -> list[str]:
    """Quantizable ops, in placement order: each consumer of a quantizer (and each weighted op)."""
    ops: dict[str, None] = {}
    for point in placement.points:
        if point.is_weight:
            ops.setdefault(point.target.node, None)
        for node, _port in point.consumers:
            ops.setdefault(node, None)
    return list(ops)


def _prepare(model: Any, backend: str) -> Any:
    """What ``validation_fn`` receives: the torch module in eval mode, the ONNX ModelProto, or
    (as NNCF) an OpenVINO model compiled for CPU."""
    if backend == "openvino":
        import openvino as ov

        return ov.Core().compile_model(model, "CPU")
    if backend == "torch":
        model.eval()
    return model


def _as_metric(value: Any) -> float:
    if isinstance(value, tuple):  # NNCF also accepts (metric, per-sample values)
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise QuantizationError(
            f"validation_fn must return a number (higher is better), got {type(value).__name__}"
        ) from None


def _with_user_scope(names: list[str], user: IgnoredScope | None) -> IgnoredScope | None:
    if not names:
        return user
    if user is None:
        return IgnoredScope(names=list(names))
    return IgnoredScope(
        names=list(user.names) + [n for n in names if n not in user.names],
        patterns=list(user.patterns),
        types=list(user.types),
        subgraphs=list(user.subgraphs),
        validate=user.validate,
    )


def quantize_with_accuracy_control(
    model: Any,
    calibration_dataset: Dataset,
    validation_dataset: Dataset,
    validation_fn: Any,
    max_drop: float = 0.01,
    drop_type: DropType = DropType.ABSOLUTE,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
    advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None = None,
) -> Any:
    """Quantize ``model`` so that its metric drops by at most ``max_drop``.

    ``validation_fn(model, validation_data)`` returns the metric (higher is better) of a model
    (torch module, ONNX ModelProto or compiled OpenVINO model) on an iterable of raw
    ``validation_dataset`` items. Ops whose quantization costs the most are left in float until
    the drop is within ``max_drop``; when that cannot be reached, the best model found is
    returned with an ``NNCompressWarning``. The input model is not modified. The report is
    logged at INFO and available from ``last_accuracy_control_report()`` (torch models also keep
    it as ``model.nncf.hook_manager.accuracy_control_report``).
    """
    global _LAST_REPORT
    restorer = advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters()
    if restorer.tune_hyperparams:
        raise QuantizationError(
            "quantize_with_accuracy_control: tune_hyperparams=True is not supported; leave it False"
        )
    if not isinstance(validation_dataset, Dataset):
        raise DatasetError(
            f"validation_dataset must be an nncompress.Dataset, got {type(validation_dataset).__name__}"
        )
    if not callable(validation_fn):
        raise QuantizationError("validation_fn must be callable: validation_fn(model, data) -> float")
    drop_type = DropType(drop_type)
    backend = detect_backend(model)

    def quantize_ignoring(names: list[str]) -> Any:
        return quantize(
            model,
            calibration_dataset,
            preset=preset,
            target_device=target_device,
            subset_size=subset_size,
            fast_bias_correction=fast_bias_correction,
            model_type=model_type,
            ignored_scope=_with_user_scope(names, ignored_scope),
            advanced_parameters=advanced_quantization_parameters,
        )

    def evaluate(candidate: Any, indices: list[int] | None = None) -> float:
        return _as_metric(validation_fn(_prepare(candidate, backend), validation_dataset.get_data(indices)))

    fp32_metric = evaluate(model)
    quantized = quantize_ignoring([])
    q_metric = evaluate(quantized)
    drop = calculate_drop(fp32_metric, q_metric, drop_type)
    logger.info(
        "Accuracy control: FP32 metric %.6g, INT8 metric %.6g, drop %.6g", fp32_metric, q_metric, drop
    )
    report = AccuracyControlReport(drop_type, max_drop, fp32_metric, q_metric, q_metric, drop)
    _LAST_REPORT = report
    if drop <= max_drop:
        logger.info(report.summary())
        return quantized

    # rank ops by the metric gain of leaving each one alone in float, on a validation subset
    ranking_indices = _ranking_indices(validation_dataset, restorer.ranking_subset_size)
    base = q_metric if ranking_indices is None else evaluate(quantized, ranking_indices)

    def gain(names: list[str]) -> float:
        return evaluate(quantize_ignoring(names), ranking_indices) - base

    candidates = _candidate_ops(_placement(quantized, backend))
    if len(candidates) > MAX_RANKED_CANDIDATES:
        candidates = _prefilter(candidates, gain)
    ranking = sorted(((op, gain([op])) for op in candidates), key=lambda item: -item[1])
    report.ranking = ranking
    logger.info("Accuracy control: ranking %s", ", ".join(f"{op}: {g:+.4g}" for op, g in ranking))

    # revert greedily, cumulative, the op with the largest gain first
    best_model, best_metric, best_ops = quantized, q_metric, []
    reverted: list[str] = []
    for op, _gain in ranking:
        if report.iterations >= restorer.max_num_iterations:
            break
        reverted.append(op)
        report.iterations += 1
        current = quantize_ignoring(reverted)
        metric = evaluate(current)
        drop = calculate_drop(fp32_metric, metric, drop_type)
        logger.info("Accuracy control: reverted %s -> metric %.6g, drop %.6g", op, metric, drop)
        if metric > best_metric:
            best_model, best_metric, best_ops = current, metric, list(reverted)
        if drop <= max_drop:
            best_model, best_metric, best_ops = current, metric, list(reverted)
            break

    report.final_metric = best_metric
    report.final_drop = calculate_drop(fp32_metric, best_metric, drop_type)
    report.reverted_ops = best_ops
    report.target_met = report.final_drop <= max_drop
    logger.info(report.summary())
    if not report.target_met:
        warnings.warn(
            f"quantize_with_accuracy_control: the {drop_type.value} metric drop {report.final_drop:.6g} "
            f"exceeds max_drop={max_drop} after {report.iterations} iteration(s); returning the best "
            f"model found (metric {best_metric:.6g}, FP32 {fp32_metric:.6g}, "
            f"{len(best_ops)} op(s) in float: {', '.join(best_ops) or 'none'})",
            NNCompressWarning,
            stacklevel=2,
        )
    hook_manager = getattr(getattr(best_model, "nncf", None), "hook_manager", None)
    if hook_manager is not None:  # torch: next to the placement
        with contextlib.suppress(AttributeError, TypeError):  # a read-only container: skip
            hook_manager.accuracy_control_report = report
    return best_model


def _ranking_indices(dataset: Dataset, ranking_subset_size: int | None) -> list[int] | None:
    """Indices of the ranking subset, or None for the whole validation set."""
    length = dataset.get_length()
    size = ranking_subset_size if ranking_subset_size is not None else 300
    if size < 1:
        raise DatasetError(f"ranking_subset_size must be a positive integer, got {ranking_subset_size!r}")
    if length is not None and size >= length:
        return None
    return list(range(size))


def _prefilter(candidates: list[str], gain: Any) -> list[str]:
    """Too many ops to rank one by one: rank contiguous chunks, keep the ops of the best chunks."""
    n_chunks = max(2, MAX_RANKED_CANDIDATES // 4)
    size = -(-len(candidates) // n_chunks)
    chunks = [candidates[i : i + size] for i in range(0, len(candidates), size)]
    scored = sorted(chunks, key=lambda chunk: -gain(chunk))
    kept: list[str] = []
    for chunk in scored:
        kept.extend(chunk[: MAX_RANKED_CANDIDATES - len(kept)])
        if len(kept) >= MAX_RANKED_CANDIDATES:
            break
    return kept


__all__ = [
    "AccuracyControlReport",
    "AdvancedAccuracyRestorerParameters",
    "calculate_drop",
    "last_accuracy_control_report",
    "quantize_with_accuracy_control",
]
